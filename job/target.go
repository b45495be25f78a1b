package job

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
)

// maxSensors bounds the Live Response sessions one submission can open.
const maxSensors = 32

// Target builds what the vendors hunt from a job message: the validated
// sample hash, the platform, the file name, and from the submission's
// metaData the CB EDR sensors (sensorId, or sensorIds as a list or a
// comma-separated string) and the on-host path (path or filePath).
//
// Only a sample hash that is not a SHA-256 is an error. metaData is
// free-form: when the sensor IDs it names are not usable (an ID that is not
// a positive integer, or more than maxSensors), the target has no sensors,
// so Live Response is not planned while the other vendors still hunt; the
// job's log and outcome say why.
//
// notes say what of metaData could not be used.
func (msg *Message) Target() (t edr.Target, notes []string, err error) {
	sha, err := edr.ValidSHA256(msg.Submission.Sample.ID)
	if err != nil {
		return edr.Target{}, nil, fmt.Errorf("submission.sample.id: %w", err)
	}
	t = edr.Target{
		JobID:    msg.JobID,
		SHA256:   sha,
		Platform: strings.ToLower(msg.Classification.Platform),
		FileName: msg.Submission.Name,
	}
	md := msg.Submission.MetaData
	sensors, err := sensorsOf(md)
	if err != nil {
		notes = append(notes, err.Error()+": Live Response skipped")
	} else {
		t.Sensors = sensors
	}
	for _, k := range []string{"path", "filePath"} {
		if s, ok := md[k].(string); ok && strings.TrimSpace(s) != "" {
			t.Path = strings.TrimSpace(s)
			break
		}
	}
	return t, notes, nil
}

// sensorsOf reads the CB EDR sensor IDs metaData names, without
// duplicates. It fails when one of them is not usable or there are more
// than maxSensors: a list that is partly unusable is not what the
// submitter meant to hunt.
func sensorsOf(md map[string]any) ([]int64, error) {
	var out []int64
	seen := map[int64]bool{}
	add := func(v any) error {
		id, err := sensorID(v)
		if err != nil {
			return err
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
		return nil
	}
	if v, ok := md["sensorId"]; ok && v != nil {
		if err := add(v); err != nil {
			return nil, fmt.Errorf("metaData.sensorId: %w", err)
		}
	}
	if v, ok := md["sensorIds"]; ok && v != nil {
		var items []any
		switch x := v.(type) {
		case []any:
			items = x
		case string:
			for _, s := range strings.Split(x, ",") {
				if s = strings.TrimSpace(s); s != "" {
					items = append(items, s)
				}
			}
		default:
			items = []any{x}
		}
		for _, it := range items {
			if err := add(it); err != nil {
				return nil, fmt.Errorf("metaData.sensorIds: %w", err)
			}
		}
	}
	if len(out) > maxSensors {
		return nil, fmt.Errorf("metaData names %d sensors; at most %d", len(out), maxSensors)
	}
	return out, nil
}

func sensorID(v any) (int64, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case float64:
		if x != float64(int64(x)) {
			return 0, fmt.Errorf("sensor id %v is not an integer", x)
		}
		s = strconv.FormatInt(int64(x), 10)
	case string:
		s = strings.TrimSpace(x)
	default:
		return 0, fmt.Errorf("sensor id of type %T", v)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("sensor id %.40q is not a positive integer", s)
	}
	return id, nil
}
