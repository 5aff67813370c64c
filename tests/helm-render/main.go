// helm-render renders a Helm chart the way `helm template` does, for testing the stateguard
// chart on machines without the helm binary. It uses the same template engine (Go text/template),
// the same function library (sprig, minus env/expandenv, as Helm removes them) and the same
// Helm-defined functions (include, tpl, required, fail, toYaml, fromYaml, toJson, fromJson,
// lookup), with Helm's semantics:
//
//   - values: the chart's values.yaml, then each --values file, then --set/--set-string, merged
//     the way Helm coalesces them (maps merge key by key, a null removes the key); values are
//     read like sigs.k8s.io/yaml does (YAML -> JSON), so numbers are float64 as in Helm;
//   - the top-level object: .Values, .Release (Name, Namespace, Service "Helm", IsInstall,
//     IsUpgrade, Revision), .Chart (Chart.yaml fields, capitalised as Helm's chart.Metadata),
//     .Capabilities (KubeVersion, APIVersions), .Template (Name, BasePath), .Files (Get);
//   - every file in templates/ is parsed into one template set (files starting with "_" define
//     templates only); missing keys render as empty ("missingkey=zero", then "<no value>"
//     removed), as Helm does when not --strict;
//   - each rendered file is split into YAML documents, empty ones dropped, each parsed as YAML
//     (a parse error fails, as in Helm), sorted by Helm's install order, printed as
//     "---\n# Source: <chart>/templates/<file>\n<document>".
//
// Not implemented (the stateguard chart uses none): toToml, subcharts/dependencies,
// .Files.Glob/AsConfig/AsSecrets, lookup against a live cluster (it returns an empty map, as
// `helm template` does), --set with list indexes (a[0]=x).
//
// Build (Debian 12: golang-go, golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v2-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helm-render tests/helm-render/main.go
//
// Usage:
//
//	helm-render --chart manifests/helm/stateguard [--release-name N] [--namespace NS]
//	            [--values FILE]... [--set k.e.y=v]... [--set-string k=v]... [--notes]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// ---- values, read and written the way sigs.k8s.io/yaml (which Helm uses) does ----

// yamlToJSONValue converts a yaml.v2 value into what encoding/json would produce from the JSON
// form of the same document: map[string]interface{}, []interface{}, float64, string, bool, nil.
func yamlToJSONValue(v interface{}) (interface{}, error) {
	var conv func(interface{}) (interface{}, error)
	conv = func(v interface{}) (interface{}, error) {
		switch t := v.(type) {
		case map[interface{}]interface{}:
			out := map[string]interface{}{}
			for k, val := range t {
				c, err := conv(val)
				if err != nil {
					return nil, err
				}
				out[fmt.Sprint(k)] = c
			}
			return out, nil
		case []interface{}:
			out := make([]interface{}, len(t))
			for i, val := range t {
				c, err := conv(val)
				if err != nil {
					return nil, err
				}
				out[i] = c
			}
			return out, nil
		default:
			return t, nil
		}
	}
	c, err := conv(v)
	if err != nil {
		return nil, err
	}
	// Round-trip through JSON: numbers become float64, as in Helm's values.
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var out interface{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func readValuesFile(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	v, err := yamlToJSONValue(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: values must be a mapping", path)
	}
	return m, nil
}

// toYAML is Helm's toYaml: sigs.k8s.io/yaml.Marshal (JSON, then yaml.v2 keeping the JSON key
// order), without the trailing newline; "" on error.
func toYAML(v interface{}) string {
	data, err := marshalYAML(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

// marshalYAML is sigs.k8s.io/yaml.Marshal: JSON first, then JSONToYAML (yaml.v2 reads the JSON,
// which keeps integer types, and writes it with sorted keys).
func marshalYAML(v interface{}) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return nil, err
	}
	return yaml.Marshal(obj)
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	var raw interface{}
	if err := yaml.Unmarshal([]byte(str), &raw); err != nil {
		m["Error"] = err.Error()
		return m
	}
	v, err := yamlToJSONValue(raw)
	if err != nil {
		m["Error"] = err.Error()
		return m
	}
	if mm, ok := v.(map[string]interface{}); ok {
		return mm
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(str), &raw); err != nil {
		return []interface{}{err.Error()}
	}
	v, err := yamlToJSONValue(raw)
	if err != nil {
		return []interface{}{err.Error()}
	}
	if a, ok := v.([]interface{}); ok {
		return a
	}
	return []interface{}{}
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// coalesce merges src over dst like Helm: maps merge recursively, a nil in src deletes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			if dIsMap && !sIsMap {
				fmt.Fprintf(os.Stderr, "warning: cannot overwrite table with non table for %s\n", k)
			}
			dst[k] = sv
		}
	}
	return dst
}

// parseSetValue types a --set value the way Helm's strvals does: true/false, null, integers
// (int64), everything else a string; {a,b} is a list.
func parseSetValue(s string, asString bool) interface{} {
	if asString {
		return s
	}
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
		inner := s[1 : len(s)-1]
		out := []interface{}{}
		if inner == "" {
			return out
		}
		for _, p := range strings.Split(inner, ",") {
			out = append(out, parseSetValue(p, false))
		}
		return out
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return i
	}
	return s
}

// splitKey splits a --set key on dots not escaped with a backslash.
func splitKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] == '\\' && i+1 < len(key) && key[i+1] == '.' {
			cur.WriteByte('.')
			i++
			continue
		}
		if key[i] == '.' {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(key[i])
	}
	return append(parts, cur.String())
}

func applySet(vals map[string]interface{}, expr string, asString bool) error {
	// Helm splits several assignments on commas outside braces; one per flag is enough here.
	eq := strings.Index(expr, "=")
	if eq <= 0 {
		return fmt.Errorf("--set %q: expected key=value", expr)
	}
	key, raw := expr[:eq], expr[eq+1:]
	if strings.ContainsAny(key, "[]") {
		return fmt.Errorf("--set %q: list indexes are not supported by helm-render", expr)
	}
	parts := splitKey(key)
	cur := vals
	for _, p := range parts[:len(parts)-1] {
		next, ok := cur[p].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			cur[p] = next
		}
		cur = next
	}
	last := parts[len(parts)-1]
	v := parseSetValue(raw, asString)
	if v == nil {
		delete(cur, last)
	} else {
		cur[last] = v
	}
	return nil
}

// ---- the chart ----

// chartMetadata maps Chart.yaml keys to the field names templates see (.Chart.Name, ...).
func chartMetadata(path string) (map[string]interface{}, error) {
	raw, err := readValuesFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	for k, v := range raw {
		switch k {
		case "apiVersion":
			out["APIVersion"] = v
		case "appVersion":
			out["AppVersion"] = v
		case "kubeVersion":
			out["KubeVersion"] = v
		default:
			out[strings.ToUpper(k[:1])+k[1:]] = v
		}
	}
	for _, req := range []string{"APIVersion", "Name", "Version"} {
		if s, _ := out[req].(string); s == "" {
			return nil, fmt.Errorf("%s: %s is required", path, req)
		}
	}
	if out["APIVersion"] != "v2" {
		return nil, fmt.Errorf("%s: apiVersion must be v2", path)
	}
	return out, nil
}

// Helm's InstallOrder (pkg/releaseutil/kind_sorter.go).
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
	"ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
	"DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService",
}

type manifest struct {
	source string
	body   string
	kind   string
}

var docSep = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func run() error {
	var chartDir, releaseName, namespace string
	var valueFiles, sets, setStrings multiFlag
	var notes bool
	var kubeVersion string
	flag.StringVar(&chartDir, "chart", "", "chart directory (with Chart.yaml)")
	flag.StringVar(&releaseName, "release-name", "stateguard", "release name")
	flag.StringVar(&namespace, "namespace", "stateguard-system", "release namespace")
	flag.Var(&valueFiles, "values", "values file (repeatable)")
	flag.Var(&sets, "set", "key=value (repeatable)")
	flag.Var(&setStrings, "set-string", "key=value, value kept a string (repeatable)")
	flag.BoolVar(&notes, "notes", false, "also render NOTES.txt (to stderr)")
	flag.StringVar(&kubeVersion, "kube-version", "v1.30.0", "Kubernetes version for .Capabilities.KubeVersion (helm template --kube-version)")
	flag.Parse()
	if chartDir == "" {
		return errors.New("--chart is required")
	}

	chart, err := chartMetadata(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartName := chart["Name"].(string)
	values, err := readValuesFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		override, err := readValuesFile(f)
		if err != nil {
			return err
		}
		values = coalesce(values, override)
	}
	setVals := map[string]interface{}{}
	for _, s := range sets {
		if err := applySet(setVals, s, false); err != nil {
			return err
		}
	}
	for _, s := range setStrings {
		if err := applySet(setVals, s, true); err != nil {
			return err
		}
	}
	// --set values keep strvals' types (int64, bool, string), as in Helm.
	values = coalesce(values, setVals)

	// Templates: every file under templates/, named <chart>/templates/<file> as in Helm.
	tdir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(tdir)
	if err != nil {
		return err
	}
	type file struct{ name, text string }
	var files []file
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tdir, e.Name()))
		if err != nil {
			return err
		}
		files = append(files, file{chartName + "/templates/" + e.Name(), string(data)})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includedNames := map[string]int{}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if includedNames[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		includedNames[name]++
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}
	tplCount := 0
	funcs["tpl"] = func(text string, vals interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		tplCount++
		name := fmt.Sprintf("tpl-%d", tplCount)
		nt, err := clone.New(name).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", text, err)
		}
		var buf strings.Builder
		if err := nt.Execute(&buf, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %v", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	funcs["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warn)
		} else if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warn)
		}
		return val, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["fromYamlArray"] = fromYAMLArray
	funcs["toJson"] = toJSON
	funcs["fromJson"] = fromJSON
	funcs["fromJsonArray"] = fromJSONArray
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	t.Funcs(funcs)
	for _, f := range files {
		if _, err := t.New(f.name).Parse(f.text); err != nil {
			return err
		}
	}

	top := func(name string) map[string]interface{} {
		return map[string]interface{}{
			"Values": values,
			"Release": map[string]interface{}{
				"Name": releaseName, "Namespace": namespace, "Service": "Helm",
				"IsInstall": true, "IsUpgrade": false, "Revision": 1,
			},
			"Chart": chart,
			"Capabilities": map[string]interface{}{
				"KubeVersion": kubeVersionOf(kubeVersion),
				"APIVersions": []string{},
			},
			"Template": map[string]interface{}{
				"Name": name, "BasePath": chartName + "/templates",
			},
			"Files": chartFiles{dir: chartDir},
		}
	}

	var out []manifest
	for _, f := range files {
		base := filepath.Base(f.name)
		if strings.HasPrefix(base, "_") {
			continue
		}
		isNotes := base == "NOTES.txt"
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, f.name, top(f.name)); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			if notes {
				fmt.Fprint(os.Stderr, text)
			}
			continue
		}
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") &&
			!strings.HasSuffix(base, ".tpl") {
			continue
		}
		for _, doc := range docSep.Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return fmt.Errorf("YAML parse error on %s: %v", f.name, err)
			}
			out = append(out, manifest{source: f.name, body: doc, kind: head.Kind})
		}
	}
	rank := func(kind string) int {
		for i, k := range installOrder {
			if k == kind {
				return i
			}
		}
		return len(installOrder)
	}
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i].kind) < rank(out[j].kind) })
	for _, m := range out {
		fmt.Printf("---\n# Source: %s\n%s\n", m.source, strings.TrimRight(m.body, "\n"))
	}
	return nil
}

// chartFiles is .Files: Get reads a file of the chart (outside templates/), "" if missing.
type chartFiles struct{ dir string }

func (f chartFiles) Get(name string) string {
	data, err := os.ReadFile(filepath.Join(f.dir, filepath.Clean("/"+name)))
	if err != nil {
		return ""
	}
	return string(data)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// kubeVersionOf is .Capabilities.KubeVersion for "v1.26.5" (or "1.26"): Version, Major, Minor,
// GitVersion, as Helm fills them.
func kubeVersionOf(v string) map[string]interface{} {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	v = "v" + strings.Join(parts, ".")
	return map[string]interface{}{"Version": v, "Major": parts[0], "Minor": parts[1], "GitVersion": v}
}
