package tenant

import (
	"context"
	"errors"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"go.uber.org/zap"
)

// Reloader watches a tenants file and the secret files it names, and
// applies a changed, valid file to a Registry. A file that does not load or
// validate is refused with every problem logged, and the previous accounts
// stay in force. The file is polled (by content digest, which also follows
// Kubernetes' atomic symlink swaps of mounted ConfigMaps and Secrets).
type Reloader struct {
	Path     string
	Check    URLCheck
	Registry *Registry
	// Every is the polling period; default 10s.
	Every time.Duration
	// Loaded, if set, is told every config before it is applied (the
	// worker adds its secrets to the process's redact.Set).
	Loaded func(Config)
	// Result, if set, is told the outcome of every reload that found a
	// change: nil, or the problems.
	Result func(error)
	Log    *zap.Logger

	digest string
}

// Prime records digest as the content already applied (the worker loaded
// the file at start).
func (r *Reloader) Prime(digest string) { r.digest = digest }

// Run polls until ctx ends.
func (r *Reloader) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	startstop.Every(ctx, every, func(context.Context) { _, _ = r.ReloadOnce() })
}

// ReloadOnce loads the file and, when its content (or a secret it names)
// changed and it is valid, applies it. It reports whether it applied one.
func (r *Reloader) ReloadOnce() (bool, error) {
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	cfg, digest, errs := Load(r.Path, r.Check)
	if len(errs) > 0 {
		err := errors.Join(errs...)
		// Log only when the problem is new: polling keeps finding it.
		if key := "bad:" + err.Error(); key != r.digest {
			r.digest = key
			msgs := make([]string, len(errs))
			for i, e := range errs {
				msgs[i] = e.Error()
			}
			log.Error("tenants file refused; the previous accounts stay in force", zap.String("file", r.Path), zap.Strings("problems", msgs))
			if r.Result != nil {
				r.Result(err)
			}
		}
		return false, err
	}
	if digest == r.digest {
		return false, nil
	}
	if r.Loaded != nil {
		r.Loaded(cfg)
	}
	if err := r.Registry.Apply(cfg); err != nil {
		log.Error("tenants file refused: an account's driver could not be built; the previous accounts stay in force", zap.String("file", r.Path), zap.Error(err))
		r.digest = "bad:" + err.Error()
		if r.Result != nil {
			r.Result(err)
		}
		return false, err
	}
	r.digest = digest
	log.Info("tenants file reloaded", zap.String("file", r.Path), zap.Strings("customers", cfg.Customers()))
	if r.Result != nil {
		r.Result(nil)
	}
	return true, nil
}
