package watchdog

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Systemd speaks sd_notify to the service manager when the process runs
// under a unit of Type=notify (NOTIFY_SOCKET is set); otherwise every
// call does nothing. The environment is left as it is, so several agents
// in one process (tests) each notify.
type Systemd struct {
	w   *Watchdog
	log *slog.Logger
}

// NewSystemd returns the notifier; w decides whether the service is
// alive (nil: always).
func NewSystemd(w *Watchdog, log *slog.Logger) *Systemd {
	if log == nil {
		log = slog.Default()
	}
	return &Systemd{w: w, log: log}
}

// Ready says the service is up (READY=1).
func (s *Systemd) Ready() { s.notify(daemon.SdNotifyReady) }

// Stopping says the service is shutting down (STOPPING=1).
func (s *Systemd) Stopping() { s.notify(daemon.SdNotifyStopping) }

func (s *Systemd) notify(state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		s.log.Warn("systemd notify failed", "state", state, "err", err)
	}
	return sent
}

// KeepAlive sends WATCHDOG=1 every half of the unit's WatchdogSec
// (WATCHDOG_USEC) until ctx ends, but only while no loop is stalled: a
// stalled agent stops petting systemd's watchdog, which then restarts it
// even if the stall callback could not end the process. It returns at
// once when the unit has no watchdog.
func (s *Systemd) KeepAlive(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		s.log.Warn("systemd watchdog settings", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		s.keepAliveOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keepAliveOnce pets the service manager's watchdog if the agent is
// healthy; it reports whether it did.
func (s *Systemd) keepAliveOnce() bool {
	if !s.w.Healthy() {
		return false
	}
	return s.notify(daemon.SdNotifyWatchdog)
}
