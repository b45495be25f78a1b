package main

import (
	"context"
	"fmt"
	"time"
)

// releaseReport is `fleetctl release <id> -o json`.
type releaseReport struct {
	ID            string `json:"id"`
	PreviousOwner string `json:"previousOwner"` // "" when nobody held it
}

func (c *cli) release(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("release", "release <id> [-o json]", &o, 30*time.Second)
	id, err := parseJobID(fs, &o, args)
	if err != nil {
		return err
	}
	st, ctx, done, err := c.ledger(ctx, o.timeout)
	if err != nil {
		return err
	}
	defer done()

	owner, ok, err := st.ForceRelease(ctx, id, "")
	if err != nil {
		return err
	}
	if !ok {
		term, finished, err := st.Tombstone(ctx, id)
		if err != nil {
			return err
		}
		if finished {
			return fmt.Errorf("job %s is finished (%s): there is no lease to release", id, term)
		}
		return fmt.Errorf("job %s: no such job in the ledger", id)
	}
	if o.json() {
		return writeJSON(c.stdout, releaseReport{ID: id, PreviousOwner: owner})
	}
	prev := owner
	if prev == "" {
		prev = "none (it was already released)"
	}
	fmt.Fprintf(c.stdout, "released job %s; previous owner: %s\n", id, prev)
	fmt.Fprintln(c.stdout, "The lease is expired now: the next worker with a free slot claims the job and resumes it from its checkpoints.")
	if owner != "" {
		fmt.Fprintf(c.stdout, "%s is fenced off: its next ledger write for this job fails and it stops working on it.\n", owner)
	}
	return nil
}
