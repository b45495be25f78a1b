// Command deploycheck validates the deployment artifacts without a Docker
// engine or a Kubernetes cluster:
//
//   - docker-compose.yml loads with compose-go (as `docker compose config`
//     would), and every *_FILE variable names a secret the service mounts and
//     whose file exists;
//   - the kustomize base and the example overlay build, emit the expected
//     kinds and no Secret with data, mount the Secret where the *_FILE
//     variables point, and give the drain enough grace;
//   - every PromQL expression in the Grafana dashboard, the alerts and the
//     KEDA Prometheus trigger lexes and selects only metrics of the metrics
//     contract (plus kafka_consumergroup_lag from a Kafka exporter).
//
// Run it from its directory: `cd .ci/deploycheck && go run .`. It exits 1
// and lists every problem found.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Where the pieces are, relative to the repository root.
const (
	composeFile    = "docker-compose.yml"
	kustomizeBase  = "deploy/k8s/base"
	exampleOverlay = "deploy/k8s/overlays/example"
	dashboardFile  = "deploy/grafana/analysisfleet.json"

	secretName      = "analysisfleet-secrets"
	secretMountPath = "/var/run/secrets/analysisfleet"
)

// wantKinds must all be in every kustomize build.
var wantKinds = []string{"Deployment", "ConfigMap", "Service", "ServiceMonitor",
	"PodDisruptionBudget", "ScaledObject", "PrometheusRule"}

func main() {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fail(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fail(fmt.Errorf("run me from .ci/deploycheck (no go.mod at %s)", root))
	}
	var problems []string
	report := func(part string, errs []error) {
		for _, e := range errs {
			problems = append(problems, fmt.Sprintf("%s: %v", part, e))
		}
		if len(errs) == 0 {
			fmt.Printf("ok   %s\n", part)
		}
	}
	report(composeFile, checkCompose(root))
	for _, dir := range []string{kustomizeBase, exampleOverlay} {
		report("kustomize "+dir, checkKustomize(root, dir))
	}
	report(dashboardFile, checkDashboard(filepath.Join(root, dashboardFile)))
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "FAIL", p)
		}
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "deploycheck:", err)
	os.Exit(1)
}

// ---- docker compose

func checkCompose(root string) []error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, composeFile)}},
		// No host environment: the file must not depend on one.
		Environment: types.Mapping{},
	}
	name := func(o *loader.Options) { o.SetProjectName("analysisfleet", true) }
	// Default options, as `docker compose config` loads it...
	if _, err := loader.LoadWithContext(ctx, details, name); err != nil {
		return []error{err}
	}
	// ...and with every profile on, for the checks below (fleetctl is in
	// the "tools" profile).
	p, err := loader.LoadWithContext(ctx, details, name, loader.WithProfiles([]string{"*"}))
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, s := range []string{"kafka", "kafka-init", "redis", "sims", "worker-1", "worker-2", "fleetctl"} {
		if _, ok := p.Services[s]; !ok {
			errs = append(errs, fmt.Errorf("service %s is missing", s))
		}
	}
	for sn, svc := range p.Services {
		mounted := map[string]bool{}
		for _, s := range svc.Secrets {
			mounted[s.Source] = true
			target := s.Target
			if target == "" {
				target = s.Source
			}
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			mounted[target] = true
		}
		for k, v := range svc.Environment {
			if v == nil {
				continue
			}
			base, isFile := strings.CutSuffix(k, "_FILE")
			if !isFile {
				continue
			}
			if other, ok := svc.Environment[base]; ok && other != nil {
				errs = append(errs, fmt.Errorf("service %s sets both %s and %s", sn, base, k))
			}
			sec, ok := strings.CutPrefix(*v, "/run/secrets/")
			if !ok || !mounted[*v] {
				errs = append(errs, fmt.Errorf("service %s: %s=%s is not a secret the service mounts", sn, k, *v))
				continue
			}
			def, ok := p.Secrets[sec]
			if !ok || def.File == "" {
				errs = append(errs, fmt.Errorf("secret %s is not defined with a file", sec))
				continue
			}
			if b, err := os.ReadFile(def.File); err != nil || strings.TrimSpace(string(b)) == "" {
				errs = append(errs, fmt.Errorf("secret %s: file %s is missing or empty", sec, def.File))
			}
		}
	}
	for _, w := range []string{"worker-1", "worker-2"} {
		svc := p.Services[w]
		if d, ok := svc.DependsOn["kafka-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			errs = append(errs, fmt.Errorf("%s must wait for kafka-init to complete", w))
		}
		if d, ok := svc.DependsOn["redis"]; !ok || d.Condition != types.ServiceConditionHealthy {
			errs = append(errs, fmt.Errorf("%s must wait for redis to be healthy", w))
		}
	}
	return errs
}

// ---- kustomize

// object is the part of a Kubernetes object the checks read.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Spec       json.RawMessage   `json:"spec"`
}

type deploymentSpec struct {
	Template struct {
		Spec struct {
			TerminationGracePeriodSeconds *int `json:"terminationGracePeriodSeconds"`
			Containers                    []struct {
				Name string `json:"name"`
				Env  []struct {
					Name  string `json:"name"`
					Value string `json:"value"`
				} `json:"env"`
				EnvFrom []struct {
					ConfigMapRef *struct {
						Name string `json:"name"`
					} `json:"configMapRef"`
				} `json:"envFrom"`
				SecurityContext struct {
					ReadOnlyRootFilesystem bool `json:"readOnlyRootFilesystem"`
				} `json:"securityContext"`
				VolumeMounts []struct {
					Name      string `json:"name"`
					MountPath string `json:"mountPath"`
				} `json:"volumeMounts"`
			} `json:"containers"`
			Volumes []struct {
				Name   string `json:"name"`
				Secret *struct {
					SecretName string `json:"secretName"`
				} `json:"secret"`
				EmptyDir *json.RawMessage `json:"emptyDir"`
			} `json:"volumes"`
		} `json:"spec"`
	} `json:"template"`
}

type ruleSpec struct {
	Groups []struct {
		Rules []struct {
			Alert string `json:"alert"`
			Expr  string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

type scaledObjectSpec struct {
	Triggers []struct {
		Type     string            `json:"type"`
		Metadata map[string]string `json:"metadata"`
	} `json:"triggers"`
}

func checkKustomize(root, dir string) []error {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, dir))
	if err != nil {
		return []error{err}
	}
	objs, err := objects(m)
	if err != nil {
		return []error{err}
	}
	var errs []error
	kinds := map[string]bool{}
	configMaps := map[string]map[string]string{}
	for _, o := range objs {
		kinds[o.Kind] = true
		if o.Kind == "ConfigMap" {
			configMaps[o.Metadata.Name] = o.Data
		}
	}
	for _, want := range wantKinds {
		if !kinds[want] {
			errs = append(errs, fmt.Errorf("no %s in the output", want))
		}
	}
	for _, o := range objs {
		switch o.Kind {
		case "Secret":
			if len(o.Data) > 0 || len(o.StringData) > 0 {
				errs = append(errs, fmt.Errorf("Secret %s with data is emitted: secrets stay out of the repository", o.Metadata.Name))
			}
		case "Deployment":
			var spec deploymentSpec
			if err := json.Unmarshal(o.Spec, &spec); err != nil {
				errs = append(errs, fmt.Errorf("Deployment %s: %w", o.Metadata.Name, err))
				continue
			}
			errs = append(errs, checkDeployment(o.Metadata.Name, spec, configMaps)...)
		case "PrometheusRule":
			var spec ruleSpec
			if err := json.Unmarshal(o.Spec, &spec); err != nil {
				errs = append(errs, fmt.Errorf("PrometheusRule %s: %w", o.Metadata.Name, err))
				continue
			}
			for _, g := range spec.Groups {
				for _, r := range g.Rules {
					if err := checkExpr(r.Expr); err != nil {
						errs = append(errs, fmt.Errorf("alert %s: %w", r.Alert, err))
					}
				}
			}
		case "ScaledObject":
			var spec scaledObjectSpec
			if err := json.Unmarshal(o.Spec, &spec); err != nil {
				errs = append(errs, fmt.Errorf("ScaledObject %s: %w", o.Metadata.Name, err))
				continue
			}
			for _, t := range spec.Triggers {
				if t.Type == "prometheus" {
					if err := checkExpr(t.Metadata["query"]); err != nil {
						errs = append(errs, fmt.Errorf("ScaledObject %s: prometheus trigger: %w", o.Metadata.Name, err))
					}
				}
			}
		}
	}
	return errs
}

func objects(m resmap.ResMap) ([]object, error) {
	var out []object
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		var o object
		if err := json.Unmarshal(b, &o); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.GetKind(), r.GetName(), err)
		}
		out = append(out, o)
	}
	return out, nil
}

// checkDeployment: the Secret is mounted where every *_FILE variable points
// (from env or the ConfigMap), /tmp is writable on a read-only root, and the
// grace period covers the drain (DRAIN_TIMEOUT + 35s, see deployment.yaml).
func checkDeployment(name string, spec deploymentSpec, configMaps map[string]map[string]string) []error {
	var errs []error
	ps := spec.Template.Spec
	secretVolumes := map[string]bool{}
	emptyDirs := map[string]bool{}
	for _, v := range ps.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			secretVolumes[v.Name] = true
		}
		if v.EmptyDir != nil {
			emptyDirs[v.Name] = true
		}
	}
	for _, c := range ps.Containers {
		env := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				cm, ok := configMaps[ef.ConfigMapRef.Name]
				if !ok {
					errs = append(errs, fmt.Errorf("Deployment %s: ConfigMap %s is not in the output", name, ef.ConfigMapRef.Name))
				}
				for k, v := range cm {
					env[k] = v
				}
			}
		}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		secretMounted, tmp := false, false
		for _, vm := range c.VolumeMounts {
			if secretVolumes[vm.Name] && vm.MountPath == secretMountPath {
				secretMounted = true
			}
			if emptyDirs[vm.Name] && vm.MountPath == "/tmp" {
				tmp = true
			}
		}
		if !secretMounted {
			errs = append(errs, fmt.Errorf("Deployment %s: Secret %s is not mounted at %s", name, secretName, secretMountPath))
		}
		if !c.SecurityContext.ReadOnlyRootFilesystem || !tmp {
			errs = append(errs, fmt.Errorf("Deployment %s: want a read-only root with an emptyDir at /tmp", name))
		}
		if _, ok := env["WORKER_ID"]; !ok {
			errs = append(errs, fmt.Errorf("Deployment %s: WORKER_ID is not set", name))
		}
		var files []string
		for k, v := range env {
			if base, ok := strings.CutSuffix(k, "_FILE"); ok && !strings.HasPrefix(k, "KAFKA_TLS_") {
				files = append(files, k)
				if !strings.HasPrefix(v, secretMountPath+"/") {
					errs = append(errs, fmt.Errorf("Deployment %s: %s=%s is not in the Secret mount %s", name, k, v, secretMountPath))
				}
				if _, both := env[base]; both {
					errs = append(errs, fmt.Errorf("Deployment %s: both %s and %s are set", name, base, k))
				}
			}
		}
		for _, must := range []string{"SAMPLEDB_API_KEY_FILE", "REDIS_URL_FILE"} {
			if !slices.Contains(files, must) {
				errs = append(errs, fmt.Errorf("Deployment %s: %s is not set", name, must))
			}
		}
		drain := 10 * time.Second
		if v, ok := env["DRAIN_TIMEOUT"]; ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("Deployment %s: DRAIN_TIMEOUT=%q: %w", name, v, err))
			}
			drain = d
		}
		grace := 30 * time.Second
		if ps.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
		}
		if grace < drain+35*time.Second {
			errs = append(errs, fmt.Errorf("Deployment %s: terminationGracePeriodSeconds %s < DRAIN_TIMEOUT %s + 35s", name, grace, drain))
		}
	}
	return errs
}

// ---- Grafana

// panel is the part of a Grafana panel the check reads; rows nest panels.
type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

type dashboard struct {
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func checkDashboard(path string) []error {
	b, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return []error{err}
	}
	var errs []error
	if !strings.Contains(string(b), "${DS_PROMETHEUS}") {
		errs = append(errs, errors.New("panels do not use the ${DS_PROMETHEUS} datasource variable"))
	}
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				n++
				if err := checkExpr(t.Expr); err != nil {
					errs = append(errs, fmt.Errorf("panel %q: %w (expr %s)", p.Title, err, t.Expr))
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				errs = append(errs, fmt.Errorf("variable %s: unreadable query", v.Name))
				continue
			}
			q = obj.Query
		}
		n++
		if err := checkVariableQuery(q); err != nil {
			errs = append(errs, fmt.Errorf("variable %s: %w", v.Name, err))
		}
	}
	if n == 0 {
		errs = append(errs, errors.New("no PromQL expression found"))
	}
	return errs
}

// Grafana's Prometheus variable queries: label_values(expr, label),
// label_values(label), label_names(), metrics(regex), query_result(expr).
var (
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	queryResultQuery = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
	metadataQuery    = regexp.MustCompile(`^\s*(label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)|label_names\(.*\)|metrics\(.*\))\s*$`)
)

func checkVariableQuery(q string) error {
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		return checkExpr(m[1])
	}
	if m := queryResultQuery.FindStringSubmatch(q); m != nil {
		return checkExpr(m[1])
	}
	if metadataQuery.MatchString(q) {
		return nil
	}
	return fmt.Errorf("unrecognised variable query %q", q)
}
