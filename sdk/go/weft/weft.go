// Package weft writes Weft step plugins in Go: a thin layer over the
// bindings wit-bindgen generates for the `weft:plugin/step-plugin` world.
//
// Config, input and output are Go values decoded from and encoded to JSON
// (numbers arrive as json.Number, so integers beyond 2^53 keep every
// digit); a step fails by returning an error made with Retryable, Fatal or
// InvalidInput (any other error, or a panic, is a fatal error naming it);
// the host's capabilities are plain functions.
//
//	func init() {
//		weft.Register(weft.Plugin{
//			Name: "hello", Version: "0.1.0", Description: "Greets.",
//			Run: func(ctx weft.Context, config, input any) (any, error) {
//				name := weft.String(config, "name", "")
//				weft.Log(weft.Info, "hello "+name)
//				return map[string]any{"greeting": "Hello, " + name + "!"}, nil
//			},
//		})
//	}
//
// Build: `weft plugin build` in the project directory.
package weft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/wasi_keyvalue_store"
	"wit_component/weft_plugin_host"
	"wit_component/weft_plugin_types"
)

// Context says who is asking and which attempt this is.
type Context struct {
	Tenant         string
	RunID          string
	StepID         string
	Attempt        uint32
	IdempotencyKey string
}

// Plugin is what a plugin says about itself and how it runs. Schemas are
// JSON Schema documents as Go values (nil: anything).
type Plugin struct {
	Name         string
	Version      string
	Description  string
	ConfigSchema any
	InputSchema  any
	OutputSchema any
	Capabilities []string
	Run          func(ctx Context, config, input any) (any, error)
}

var registered *Plugin

// Register makes p the plugin this component exports; call it once, from
// an init function.
func Register(p Plugin) {
	registered = &p
}

// Kind is why a step failed.
type Kind uint8

const (
	// KindFatal is a permanent failure: not retried. The zero Kind, so a
	// StepError made without one is not retried.
	KindFatal Kind = iota
	// KindRetryable is a transient failure: the host retries if the step's
	// policy allows.
	KindRetryable
	// KindInvalidInput means the config or input makes no sense for this
	// plugin: not retried.
	KindInvalidInput
)

// StepError fails an attempt with a kind; errors.As finds it through
// wrapping (fmt.Errorf with %w).
type StepError struct {
	Kind    Kind
	Message string
}

func (e *StepError) Error() string { return e.Message }

// Retryable is a transient failure.
func Retryable(message string) error { return &StepError{KindRetryable, message} }

// Fatal is a permanent failure.
func Fatal(message string) error { return &StepError{KindFatal, message} }

// InvalidInput is a config or input that makes no sense.
func InvalidInput(message string) error { return &StepError{KindInvalidInput, message} }

// Level is a log line's severity.
type Level uint8

const (
	Trace Level = Level(weft_plugin_host.LogLevel_Trace)
	Debug Level = Level(weft_plugin_host.LogLevel_Debug)
	Info  Level = Level(weft_plugin_host.LogLevel_Info)
	Warn  Level = Level(weft_plugin_host.LogLevel_Warn)
	Error Level = Level(weft_plugin_host.LogLevel_Error)
)

// Log appends a line to the attempt's log.
func Log(level Level, message string) {
	weft_plugin_host.Log(weft_plugin_host.LogLevel(level), message)
}

// Progress reports progress; percent is clamped to 0..=100.
func Progress(percent int, note string) {
	weft_plugin_host.Progress(uint8(max(0, min(100, percent))), note)
}

// Secret is the tenant's secret, and false if it does not exist or is not
// granted.
func Secret(name string) (string, bool) {
	value := weft_plugin_host.Secret(name)
	if value.IsNone() {
		return "", false
	}
	return strings.Clone(value.Some()), true
}

// ReadFile is an uploaded file's bytes; the error (fatal) names the problem.
func ReadFile(id string) ([]byte, error) {
	result := weft_plugin_host.ReadFile(id)
	if result.IsErr() {
		return nil, Fatal(strings.Clone(result.Err()))
	}
	return bytes.Clone(result.Ok()), nil
}

// Mail is an email message.
type Mail struct {
	To      []string
	Cc      []string
	Subject string
	Body    string
}

// SendMail queues a message in the outbox (once per attempt position) and
// returns its id; the error (fatal) names the problem.
func SendMail(m Mail) (string, error) {
	result := weft_plugin_host.SendMail(weft_plugin_host.Mail{
		To: orEmpty(m.To), Cc: orEmpty(m.Cc), Subject: m.Subject, Body: m.Body,
	})
	if result.IsErr() {
		return "", Fatal(strings.Clone(result.Err()))
	}
	return strings.Clone(result.Ok()), nil
}

// Notification is an in-app notification; Level is info (default),
// success, warning or error.
type Notification struct {
	Title    string
	Body     string
	Level    string
	Audience string
	Link     string
}

// Notify records a notification (once per attempt position) and returns
// its id; the error (fatal) names the problem.
func Notify(n Notification) (string, error) {
	if n.Level == "" {
		n.Level = "info"
	}
	result := weft_plugin_host.Notify(weft_plugin_host.Notification{
		Title: n.Title, Body: n.Body, Level: n.Level, Audience: n.Audience, Link: n.Link,
	})
	if result.IsErr() {
		return "", Fatal(strings.Clone(result.Err()))
	}
	return strings.Clone(result.Ok()), nil
}

func orEmpty(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

// Store is a bucket of the tenant's key-value store. Its errors are
// retryable, naming the problem ("access denied", "no such store").
type Store struct{ bucket string }

// KV is the named bucket ("" or "default": the tenant's default bucket).
func KV(bucket string) Store {
	if bucket == "" {
		bucket = "default"
	}
	return Store{bucket}
}

func (s Store) open() (*wasi_keyvalue_store.Bucket, error) {
	result := wasi_keyvalue_store.Open(s.bucket)
	if result.IsErr() {
		return nil, s.fail(result.Err())
	}
	return result.Ok(), nil
}

func (s Store) fail(e wasi_keyvalue_store.Error) error {
	message := "store error"
	switch e.Tag() {
	case wasi_keyvalue_store.Error_NoSuchStore:
		message = "no such store"
	case wasi_keyvalue_store.Error_AccessDenied:
		message = "access denied"
	case wasi_keyvalue_store.Error_Other:
		message = strings.Clone(e.Other())
	}
	return Retryable(fmt.Sprintf("key-value store %q: %s", s.bucket, message))
}

// Get is the value under key, and false when there is none.
func (s Store) Get(key string) ([]byte, bool, error) {
	bucket, err := s.open()
	if err != nil {
		return nil, false, err
	}
	defer bucket.Drop()
	result := bucket.Get(key)
	if result.IsErr() {
		return nil, false, s.fail(result.Err())
	}
	value := result.Ok()
	if value.IsNone() {
		return nil, false, nil
	}
	return bytes.Clone(value.Some()), true, nil
}

// Set stores value under key.
func (s Store) Set(key string, value []byte) error {
	bucket, err := s.open()
	if err != nil {
		return err
	}
	defer bucket.Drop()
	if value == nil {
		value = []byte{}
	}
	if result := bucket.Set(key, value); result.IsErr() {
		return s.fail(result.Err())
	}
	return nil
}

// Delete removes key.
func (s Store) Delete(key string) error {
	bucket, err := s.open()
	if err != nil {
		return err
	}
	defer bucket.Drop()
	if result := bucket.Delete(key); result.IsErr() {
		return s.fail(result.Err())
	}
	return nil
}

// Keys lists every key in the bucket.
func (s Store) Keys() ([]string, error) {
	bucket, err := s.open()
	if err != nil {
		return nil, err
	}
	defer bucket.Drop()
	keys := []string{}
	cursor := witTypes.None[uint64]()
	for {
		result := bucket.ListKeys(cursor)
		if result.IsErr() {
			return nil, s.fail(result.Err())
		}
		page := result.Ok()
		for _, key := range page.Keys {
			keys = append(keys, strings.Clone(key))
		}
		if page.Cursor.IsNone() {
			return keys, nil
		}
		cursor = page.Cursor
	}
}

// GetJSON decodes the JSON value under key into v; false when there is none.
func (s Store) GetJSON(key string, v any) (bool, error) {
	value, found, err := s.Get(key)
	if err != nil || !found {
		return found, err
	}
	if err := Decode(value, v); err != nil {
		return true, Fatal(fmt.Sprintf("key-value %q is not JSON: %v", key, err))
	}
	return true, nil
}

// SetJSON stores v as compact JSON under key.
func (s Store) SetJSON(key string, v any) error {
	text, err := Encode(v)
	if err != nil {
		return Fatal(fmt.Sprintf("key-value %q: %v", key, err))
	}
	return s.Set(key, text)
}

// Decode parses JSON text into v, numbers as json.Number, refusing
// trailing data.
func Decode(text []byte, v any) error {
	decoder := json.NewDecoder(bytes.NewReader(text))
	decoder.UseNumber()
	if err := decoder.Decode(v); err != nil {
		return err
	}
	if _, err := decoder.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Encode is v as compact JSON, with <, > and & as they are.
func Encode(v any) ([]byte, error) {
	var out bytes.Buffer
	encoder := json.NewEncoder(&out)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// Field is the value under key in a JSON object (nil if v is not an
// object or has no such key).
func Field(v any, key string) any {
	if object, ok := v.(map[string]any); ok {
		return object[key]
	}
	return nil
}

// String is the string under key, or def when absent or not a string.
func String(v any, key, def string) string {
	if s, ok := Field(v, key).(string); ok {
		return s
	}
	return def
}

// Int is the integer under key, or def when absent or not an integer.
func Int(v any, key string, def int64) int64 {
	if n, ok := Field(v, key).(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return i
		}
		// 5.0 or 1e3: integral, written as a float.
		if f, err := n.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			return int64(f)
		}
	}
	return def
}

// Describe is the plugin's metadata for the host (used by the bindings).
func Describe() weft_plugin_types.PluginInfo {
	p := plugin()
	return weft_plugin_types.PluginInfo{
		Name:         p.Name,
		Version:      p.Version,
		Description:  p.Description,
		ConfigSchema: schema(p.ConfigSchema),
		InputSchema:  schema(p.InputSchema),
		OutputSchema: schema(p.OutputSchema),
		Capabilities: orEmpty(p.Capabilities),
	}
}

func plugin() *Plugin {
	if registered == nil {
		panic("no plugin registered: call weft.Register from an init function")
	}
	return registered
}

func schema(v any) string {
	if v == nil {
		return "{}"
	}
	text, err := Encode(v)
	if err != nil {
		panic(fmt.Sprintf("schema is not JSON: %v", err))
	}
	return string(text)
}

type stepResult = witTypes.Result[string, weft_plugin_types.StepError]

// Run runs one attempt (used by the bindings).
func Run(ctx weft_plugin_types.StepContext, config, input string) (result stepResult) {
	fail := func(kind Kind, message string) stepResult {
		var e weft_plugin_types.StepError
		switch kind {
		case KindRetryable:
			e = weft_plugin_types.MakeStepErrorRetryable(message)
		case KindInvalidInput:
			e = weft_plugin_types.MakeStepErrorInvalidInput(message)
		default:
			e = weft_plugin_types.MakeStepErrorFatal(message)
		}
		return witTypes.Err[string, weft_plugin_types.StepError](e)
	}
	defer func() {
		if recovered := recover(); recovered != nil {
			result = fail(KindFatal, fmt.Sprintf("panic: %v", recovered))
		}
	}()
	var configValue, inputValue any = map[string]any{}, map[string]any{}
	if config != "" {
		if err := Decode([]byte(config), &configValue); err != nil {
			return fail(KindInvalidInput, "config is not JSON: "+err.Error())
		}
	}
	if input != "" {
		if err := Decode([]byte(input), &inputValue); err != nil {
			return fail(KindInvalidInput, "input is not JSON: "+err.Error())
		}
	}
	output, err := plugin().Run(Context{
		Tenant:         strings.Clone(ctx.Tenant),
		RunID:          strings.Clone(ctx.RunId),
		StepID:         strings.Clone(ctx.StepId),
		Attempt:        ctx.Attempt,
		IdempotencyKey: strings.Clone(ctx.IdempotencyKey),
	}, configValue, inputValue)
	if err != nil {
		var stepError *StepError
		if errors.As(err, &stepError) {
			return fail(stepError.Kind, err.Error())
		}
		return fail(KindFatal, err.Error())
	}
	text, err := Encode(output)
	if err != nil {
		return fail(KindFatal, "the output is not JSON: "+err.Error())
	}
	return witTypes.Ok[string, weft_plugin_types.StepError](string(text))
}
