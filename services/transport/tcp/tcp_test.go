package tcp

import (
	"errors"
	"log/slog"
	"runtime"
	"testing"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/internal/logtest"
	"github.com/fluxon-dev/fluxon/services/transport"
)

func TestParseReactorMode(t *testing.T) {
	// The config's values (network.tcp_reactor_mode) are this package's.
	for _, tc := range []struct {
		in   string
		want ReactorMode
	}{
		{"", ReactorEventDriven},
		{config.PollEventDriven, ReactorEventDriven},
		{config.PollBusy, ReactorBusyPoll},
	} {
		in, want := tc.in, tc.want
		got, err := ParseReactorMode(in)
		if err != nil || got != want {
			t.Errorf("ParseReactorMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseReactorMode("epoll"); !errors.Is(err, ErrUnknownReactor) {
		t.Errorf("ParseReactorMode(epoll) = %v", err)
	}
	if _, err := New(Options{Reactor: "epoll"}); !errors.Is(err, ErrUnknownReactor) {
		t.Errorf("New with an unknown reactor = %v", err)
	}
}

func TestNameAndMode(t *testing.T) {
	tr, err := New(Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}, Reactor: ReactorBusyPoll})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Name() != "tcp" || tr.Reactor() != ReactorBusyPoll {
		t.Fatalf("Name %q, Reactor %q", tr.Name(), tr.Reactor())
	}
}

// busy_poll on fewer than MinBusyPollProcs processors is warned about once
// per process, not once per transport (an owner builds one per node).
func TestFewProcessorsWarnedOnce(t *testing.T) {
	if !busyPollSupported {
		t.Skip("no busy_poll on this platform")
	}
	was := runtime.GOMAXPROCS(MinBusyPollProcs - 1)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	fewProcsWarned.Store(false)
	logs := &logtest.Buffer{}
	for range 2 {
		if _, err := New(Options{Options: transport.Options{Log: slog.New(slog.NewTextHandler(logs, nil))}, Reactor: ReactorBusyPoll}); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.Lines("busy_poll with few processors"); n != 1 {
		t.Fatalf("warned %d times, want once:\n%s", n, logs.String())
	}
}
