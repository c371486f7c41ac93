package event_test

import (
	"testing"

	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/schemas"
)

func contractExample(b *testing.B) []byte {
	b.Helper()
	raw, err := schemas.Files.ReadFile("examples/task-completed.json")
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkDecode is the worker's first step for every message: the strict scan and the typed
// decode, on the contract's example event as it is printed there ("whole", indented) and as
// publishers send it ("whole_compact", what pkg/publish and Marshal produce). The other
// sub-benchmarks are the scan alone and the JSON Schema validator the tests compare it with.
func BenchmarkDecode(b *testing.B) {
	raw := contractExample(b)
	ev, err := event.Decode(raw)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		raw  []byte
	}{{"whole", raw}, {"whole_compact", ev.Marshal()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := event.Decode(bc.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("strict_scan", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			if err := event.CheckStrict(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("schema", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			if err := schemas.ValidateTaskCompleted(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCallbackBody builds the body every attempt sends.
func BenchmarkCallbackBody(b *testing.B) {
	ev, err := event.Decode(contractExample(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.CallbackBody())))
	b.ReportAllocs()
	for b.Loop() {
		_ = ev.CallbackBody()
	}
}
