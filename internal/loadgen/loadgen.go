// Package loadgen produces synthetic SampleDB job submissions: a mix of
// platforms, some naming CB EDR sensors and an on-host path, some whose
// sample the simulated vendors know, a share of bad records of every kind,
// and aborts before and during execution. worker dev and the fault suite
// use it. It registers each job with SampleDB first (as SampleDB does
// before posting to Kafka), then produces the record.
package loadgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// SampleDB is where jobs are registered and aborted (the simulator, in
// process or over its admin API).
type SampleDB interface {
	CreateJob(msg job.Message) sampledb.Job
	Abort(id string) (sampledb.Job, bool)
}

// Config configures a run.
type Config struct {
	Jobs   int     // valid jobs to submit
	Bad    int     // bad records, cycling through every kind
	Aborts int     // jobs aborted: half before they are posted, half while running
	Rate   float64 // submissions per second (0 = as fast as possible)
	Topics []string
	Seed   uint64
	// Sensors are CB EDR sensor IDs a Windows submission may name.
	Sensors []int64
	// KnownSample is a sample hash the simulators find on hosts (with
	// KnownPath, where Live Response finds it); a share of Windows jobs
	// with sensors use it.
	KnownSample, KnownPath string
	// Plant, if set, is called for a share of fresh samples so the vendors
	// find them.
	Plant func(sha256 string)
	// AbortAfter is how long after posting a running job is aborted.
	AbortAfter time.Duration
	// Customers submit the jobs, in turn; default one "dev-customer".
	Customers []string
	// OnPosted, if set, is called with each valid job's ID once its record
	// is produced (worker dev shows the first few).
	OnPosted func(id string)
}

// Stats is what a run produced.
type Stats struct {
	Valid        []string // job IDs posted (aborted ones included)
	AbortedEarly []string // aborted before they were posted
	AbortedLate  []string // aborted while (probably) running
	Bad          map[string]int
	// Sensors is how many CB EDR sensors each job names (absent = none).
	Sensors     map[string]int
	First, Last time.Time
}

// BadKinds are the bad-record kinds produced, by expected dead-letter reason.
var BadKinds = []string{"not_json", "missing_job_id", "invalid_job_id", "invalid_sample_hash", "wrong_field_type", "oversized"}

// Run submits everything and returns when the last record is posted and
// the last late abort sent (or ctx ends).
func Run(ctx context.Context, cfg Config, sdb SampleDB, prod *kgo.Client, maxMessageBytes int) (*Stats, error) {
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("loadgen: no topics")
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	st := &Stats{Bad: map[string]int{}, Sensors: map[string]int{}}
	total := cfg.Jobs + cfg.Bad
	badAt := map[int]string{}
	for i := range cfg.Bad {
		badAt[(i+1)*total/(cfg.Bad+1)] = BadKinds[i%len(BadKinds)]
	}
	abortEarly := map[int]bool{}
	abortLate := map[int]bool{}
	for i := range min(cfg.Aborts, cfg.Jobs) {
		k := (i*7919 + 13) % cfg.Jobs
		for abortEarly[k] || abortLate[k] {
			k = (k + 1) % cfg.Jobs
		}
		if i%2 == 0 {
			abortEarly[k] = true
		} else {
			abortLate[k] = true
		}
	}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	var lateWG sync.WaitGroup
	defer lateWG.Wait()
	next := time.Now()
	valid := 0
	for i := range total {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				select {
				case <-ctx.Done():
					return st, ctx.Err()
				case <-time.After(d):
				}
			}
			next = next.Add(interval)
		}
		topic := cfg.Topics[i%len(cfg.Topics)]
		var rec *kgo.Record
		if kind, bad := badAt[i]; bad {
			rec = &kgo.Record{Topic: topic, Value: badRecord(kind, rng, maxMessageBytes)}
			st.Bad[kind]++
		} else {
			msg := cfg.job(rng)
			if abortEarly[valid] {
				sdb.CreateJob(msg)
				sdb.Abort(msg.JobID)
				st.AbortedEarly = append(st.AbortedEarly, msg.JobID)
			} else {
				sdb.CreateJob(msg)
			}
			if abortLate[valid] {
				st.AbortedLate = append(st.AbortedLate, msg.JobID)
				lateWG.Add(1)
				go func(id string) {
					defer lateWG.Done()
					select {
					case <-ctx.Done():
					case <-time.After(cfg.AbortAfter):
						sdb.Abort(id)
					}
				}(msg.JobID)
			}
			switch v := msg.Submission.MetaData["sensorIds"].(type) {
			case []int64:
				st.Sensors[msg.JobID] = len(v)
			default:
				if _, ok := msg.Submission.MetaData["sensorId"]; ok {
					st.Sensors[msg.JobID] = 1
				}
			}
			rec = Record(topic, msg)
			st.Valid = append(st.Valid, msg.JobID)
			valid++
		}
		if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return st, fmt.Errorf("loadgen: produce: %w", err)
		}
		if cfg.OnPosted != nil && len(rec.Key) > 0 {
			cfg.OnPosted(string(rec.Key))
		}
		if st.First.IsZero() {
			st.First = time.Now()
		}
		st.Last = time.Now()
	}
	return st, nil
}

// Record is the Kafka record SampleDB posts for msg: keyed by the job ID,
// the message as JSON.
func Record(topic string, msg job.Message) *kgo.Record {
	b, _ := json.Marshal(msg)
	return &kgo.Record{Topic: topic, Key: []byte(msg.JobID), Value: b}
}

// Post submits one job as Run submits each valid one: registered with
// SampleDB first, then produced to topic.
func Post(ctx context.Context, sdb SampleDB, prod *kgo.Client, topic string, msg job.Message) error {
	sdb.CreateJob(msg)
	if err := prod.ProduceSync(ctx, Record(topic, msg)).FirstErr(); err != nil {
		return fmt.Errorf("loadgen: produce: %w", err)
	}
	return nil
}

// Job returns one valid job as Run makes them: a random platform, sometimes
// CB EDR sensors (and then sometimes KnownSample at KnownPath), a fresh
// sample otherwise, planted with Plant now and then, submitted by one of
// Customers.
func (cfg *Config) Job(rng *rand.Rand) job.Message { return cfg.job(rng) }

var platforms = []struct {
	name  string
	share float64
	typ   string
}{{"win", 0.6, "PE"}, {"linux", 0.25, "ELF"}, {"osx", 0.15, "MACHO"}}

func (cfg *Config) job(rng *rand.Rand) job.Message {
	p := platforms[len(platforms)-1]
	x, acc := rng.Float64(), 0.0
	for _, c := range platforms {
		acc += c.share
		if x < acc {
			p = c
			break
		}
	}
	sha := RandomSHA256(rng)
	name := fmt.Sprintf("sample-%04d.%s", rng.IntN(10000), map[string]string{"win": "exe", "linux": "elf", "osx": "macho"}[p.name])
	meta := map[string]any{"source": "loadgen"}
	if p.name == "win" && len(cfg.Sensors) > 0 && rng.Float64() < 0.4 {
		if rng.Float64() < 0.5 {
			meta["sensorId"] = cfg.Sensors[rng.IntN(len(cfg.Sensors))]
		} else {
			meta["sensorIds"] = cfg.Sensors
		}
		if cfg.KnownSample != "" && rng.Float64() < 0.5 {
			sha = cfg.KnownSample
			meta["path"] = cfg.KnownPath
			name = cfg.KnownPath[strings.LastIndexAny(cfg.KnownPath, `\/`)+1:]
		}
	}
	if sha != cfg.KnownSample && cfg.Plant != nil && rng.Float64() < 0.3 {
		cfg.Plant(sha)
	}
	customer := "dev-customer"
	if len(cfg.Customers) > 0 {
		customer = cfg.Customers[rng.IntN(len(cfg.Customers))]
	}
	return devAnalyst.Message(Sample{SHA256: sha, Name: name, Type: p.typ, Platform: p.name}, customer, meta)
}

// devAnalyst submits loadgen's jobs.
var devAnalyst = Submitter{User: job.User{ID: 42, ShortName: "analyst", Name: "Dev Analyst"}, Agent: "loadgen"}

// Submitter is who a synthetic job says submitted it: an analyst, through
// the user agent named Agent (version 1).
type Submitter struct {
	User  job.User
	Agent string
}

// Sample is the sample of a synthetic job and how it is classified.
type Sample struct {
	SHA256, Name   string
	Type, Platform string // classification: "PE" on "win", …
}

// Message returns the job message SampleDB produces when s submits smp for
// customer, with meta as the submission's metaData: fresh job, submission
// and classification IDs, timestamps of now, an executable for x86_64.
func (s Submitter) Message(smp Sample, customer string, meta map[string]any) job.Message {
	now := time.Now().UnixMilli()
	user := s.User
	return job.Message{
		JobID: uuid.NewString(),
		Submission: job.Submission{
			ID: uuid.NewString(), Customer: customer, Sample: job.Sample{ID: smp.SHA256},
			CreatedByUser:    &user,
			CreatedTimestamp: now, Name: smp.Name, Timestamp: now, MimeType: "application/octet-stream",
			MetaData: meta, TLP: "amber", ACL: json.RawMessage(`[]`),
			UserAgent: &job.UserAgent{Name: s.Agent, Version: "1"},
		},
		Classification: job.Classification{
			Sample: smp.SHA256, ClassificationID: uuid.NewString(), CreatedTimestamp: now, Version: "1",
			Type: smp.Type, SuperType: "executable", Arch: "x86_64", Platform: smp.Platform,
		},
	}
}

// RandomSHA256 returns a fresh sample hash drawn from rng: one no vendor
// knows unless it is planted.
func RandomSHA256(rng *rand.Rand) string {
	var b [32]byte
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	h := sha256.Sum256(b[:])
	return hex.EncodeToString(h[:])
}

func badRecord(kind string, rng *rand.Rand, maxBytes int) []byte {
	id := uuid.NewString()
	sha := RandomSHA256(rng)
	switch kind {
	case "not_json":
		return []byte(`{"jobID": "` + id + `", "submission": {`)
	case "missing_job_id":
		return []byte(`{"submission": {"sample": {"id": "` + sha + `"}}}`)
	case "invalid_job_id":
		return []byte(`{"jobID": "job-` + id[:8] + `", "submission": {"sample": {"id": "` + sha + `"}}}`)
	case "invalid_sample_hash":
		return []byte(`{"jobID": "` + id + `", "submission": {"sample": {"id": "x' OR 1=1--"}}}`)
	case "wrong_field_type":
		return []byte(`{"jobID": "` + id + `", "submission": {"sample": {"id": "` + sha + `"}, "metaData": ["not", "an", "object"]}}`)
	case "oversized":
		pad := strings.Repeat("A", maxBytes+1)
		return []byte(`{"jobID": "` + id + `", "submission": {"sample": {"id": "` + sha + `"}}, "pad": "` + pad + `"}`)
	}
	return []byte("?")
}
