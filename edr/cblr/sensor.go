package cblr

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// sensorPath is the CB EDR sensor route: GET answers the sensor's record
// (id, computer_name, status, supports_cblr, uninstalled, …), 404 for a
// sensor the server does not know.
const sensorPath = "/api/v1/sensor/"

// sensor is what the driver reads of a sensor record (recorded in
// testdata/recorded/get_sensor_1.json).
type sensor struct {
	ID           flexID `json:"id"`
	ComputerName string `json:"computer_name"`
	Status       string `json:"status"`
	SupportsCBLR *bool  `json:"supports_cblr"`
	Uninstalled  *bool  `json:"uninstalled"`
}

// checkSensor makes sure s is a sensor of this driver's CB EDR server — the
// job's customer's own — before any session is opened on it: the submission
// names sensors, and a sensor ID is only a number, valid on every server.
// A sensor the server does not know (404, or an answer about another
// sensor), or one that cannot run Live Response, is skipped with a remark:
// the triage runs on the customer's sensors only. It reports whether s may
// be used.
func (d *Driver) checkSensor(ctx context.Context, op string, s *sensorRef) (bool, error) {
	if s.Checked {
		return true, nil
	}
	id := strconv.FormatInt(s.SensorID, 10)
	what := "GET sensor " + id
	resp, err := d.send(ctx, op, http.MethodGet, sensorPath+id, nil)
	if err != nil {
		return false, err
	}
	if resp.Status == http.StatusNotFound {
		s.skip("sensor %d is not known to the customer's CB EDR server: Live Response was not run on it", s.SensorID)
		return false, nil
	}
	rec, err := decodeAnswer(d, op, what, resp, func(b []byte) (rec sensor, err error) { return rec, decodeObject(b, &rec) })
	if err != nil {
		return false, err
	}
	if string(rec.ID) != id {
		s.skip("CB EDR answered about sensor %q when asked for sensor %d: Live Response was not run on it", clip(string(rec.ID)), s.SensorID)
		return false, nil
	}
	switch {
	case rec.Uninstalled != nil && *rec.Uninstalled:
		s.skip("sensor %d is uninstalled: Live Response was not run on it", s.SensorID)
		return false, nil
	case rec.SupportsCBLR != nil && !*rec.SupportsCBLR:
		s.skip("sensor %d does not support Live Response", s.SensorID)
		return false, nil
	}
	if s.Host == "" {
		s.Host = clip(strings.TrimSpace(rec.ComputerName))
	}
	s.Checked = true
	return true, nil
}

// skip ends s without a session and without counting it as failed: it is
// not the customer's, or cannot run Live Response.
func (s *sensorRef) skip(format string, args ...any) {
	s.Remarks = append(s.Remarks, fmt.Sprintf(format, args...))
	s.Skipped = true
	s.Step = stepDone
}
