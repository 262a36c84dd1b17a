// Package telemetry is the observability baseline every role shares: slog
// logging (JSON files under log_dir, readable text on the console, level from
// FLUXON_LOG) and an HTTP server with /metrics and /healthz.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// LogEnv names the environment variable that sets the log level.
const LogEnv = "FLUXON_LOG"

// ParseLevel maps FLUXON_LOG values (debug, info, warn, error; empty = info).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("%s=%q: unknown level; use debug, info, warn or error", LogEnv, s)
}

// Logger is a process logger and the file it writes, if any.
type Logger struct {
	*slog.Logger
	file *os.File
}

// Close flushes and closes the log file.
func (l *Logger) Close() error {
	if l.file == nil {
		return nil
	}
	return l.file.Close()
}

// Path returns the JSON log file's path, or "" when logging to the console only.
func (l *Logger) Path() string {
	if l.file == nil {
		return ""
	}
	return l.file.Name()
}

// NewLogger logs readable text to console and, when logDir is set, JSON lines
// to <logDir>/<name>.log (appended across restarts). The level comes from
// FLUXON_LOG. attrs are attached to every record (role, instance_key).
func NewLogger(console io.Writer, logDir, name string, attrs ...any) (*Logger, error) {
	level, err := ParseLevel(os.Getenv(LogEnv))
	if err != nil {
		return nil, err
	}
	handlers := []slog.Handler{slog.NewTextHandler(console, &slog.HandlerOptions{Level: level})}
	var f *os.File
	if logDir != "" {
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return nil, fmt.Errorf("log_dir %s: %w", logDir, err)
		}
		f, err = os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log_dir %s: %w", logDir, err)
		}
		handlers = append(handlers, slog.NewJSONHandler(f, &slog.HandlerOptions{Level: level}))
	}
	return &Logger{Logger: slog.New(fanout(handlers)).With(attrs...), file: f}, nil
}

// fanout sends each record to every handler that is enabled for it.
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(attrs)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}
