// Package logging builds the zap logger every service uses: JSON in production, console for a
// developer's terminal.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing format ("json" or "console") at level ("debug", "info", …) to
// standard error. The console format is coloured only when standard error is a terminal and
// NO_COLOR (no-color.org) is unset: the local stack sends it to log files, where escape codes
// would only get in the way of reading and grepping.
func New(service, format, level string) (*zap.Logger, error) {
	cfg, err := config(format, level, isTerminal(os.Stderr) && os.Getenv("NO_COLOR") == "")
	if err != nil {
		return nil, err
	}
	log, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	return log.With(zap.String("service", service)), nil
}

func config(format, level string, colour bool) (zap.Config, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return zap.Config{}, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "json", "":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "time"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	case "console":
		cfg = zap.NewDevelopmentConfig()
		// Development mode would add a stack trace to every warning, and a refused event or a
		// failed attempt is a warning about someone else's input, not a fault in this code.
		// Stack traces stay on errors, as in production.
		cfg.Development = false
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		if colour {
			cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
	default:
		return zap.Config{}, fmt.Errorf("LOG_FORMAT %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil // one line per attempt is the contract with operators; never drop them
	return cfg, nil
}

// isTerminal reports whether f is a character device, as a terminal is (a file or pipe is not).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
