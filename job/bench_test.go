package job

import "testing"

var benchRecord = []byte(`{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"id":"abcdef01-abcd-abcd-abcd-abcdef012345","customer":"customerid","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"createdByUser":{"id":0,"shortName":"sn","name":"name","customer":null,"domain":null},"createdTimestamp":123,"name":"fielname.exe","timestamp":124,"mimeType":"application/octet-stream","metaData":{"key":"value","sensorIds":[1,2]},"tlp":"white","acl":[],"userAgent":{"name":"python-requests","version":"3"}},"classification":{"sample":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9","classificationID":"12345678-1234-1234-1234-123456789012","createdTimestamp":123,"version":"1","type":"PE","superType":"executable","arch":"x86","platform":"win","meta":{}}}`)

func BenchmarkDecodeJobMessage(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchRecord)))
	for b.Loop() {
		if _, err := Decode(benchRecord, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
