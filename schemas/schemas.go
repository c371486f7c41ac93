// Package schemas embeds the JSON Schemas of the public contract: the task completion event that
// upstream services publish and the callback body that customers receive. They are compiled once,
// at first use, so that validating a message never pays for compilation.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed *.schema.json openapi.json examples/*.json
var Files embed.FS

const (
	TaskCompletedFile = "task-completed.schema.json"
	CallbackFile      = "callback.schema.json"
	OpenAPIFile       = "openapi.json"
)

var compiled = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	out := make(map[string]*jsonschema.Schema, 2)
	for _, name := range []string{TaskCompletedFile, CallbackFile} {
		raw, err := Files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		if err := c.AddResource(name, doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		s, err := c.Compile(name)
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
})

// ValidateTaskCompleted checks raw JSON against the task completion event schema.
func ValidateTaskCompleted(raw []byte) error { return validate(TaskCompletedFile, raw) }

// ValidateCallback checks raw JSON against the callback body schema.
func ValidateCallback(raw []byte) error { return validate(CallbackFile, raw) }

func validate(name string, raw []byte) error {
	all, err := compiled()
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("read the document to check against %s: %w", name, err)
	}
	return all[name].Validate(doc)
}
