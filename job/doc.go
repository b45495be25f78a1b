// Package job is the job-creation message SampleDB posts to Kafka
// (Sample.Analysis.Job.OSL / .SVG) and everything the fleet derives from
// it, in one place: its types (Message), the one decoder and validator
// (Decode: strict where the fleet reads a field, lenient elsewhere, refusing
// ambiguous records), the canonical job ID (CanonicalID), and what the
// vendors hunt (Message.Target: the validated sample hash, platform, CB EDR
// sensors and on-host path). Intake decodes records with it; the runner,
// the result summary and fleetctl decode the ledger's copy with it too.
package job
