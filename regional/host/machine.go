package host

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/regional"
)

// ServedByHeader names the machine that answered a request.
const ServedByHeader = "Patina-Served-By"

// machine is one live (not destroyed) machine: its record as stored and,
// while it is started, its server and check loops.
type machine struct {
	rec    regional.Machine
	server *devServer // nil unless started and listening
	// listenErr is why a started machine resumed at the host's start is
	// not listening: its checks then fail with it, whatever answers on
	// its port (another process may hold it).
	listenErr error
	// stopChecks ends the check loops of the current start.
	stopChecks context.CancelFunc
	// gen names the current start (0: stopped), unique on the host: a
	// check result of another is stale and ignored.
	gen uint64
}

// devServer is what a machine runs in dev: a tiny HTTP server on the
// machine's address and port answering every request with who served it.
type devServer struct {
	srv  *http.Server
	done chan struct{}
	// sick makes every request but the /_patina/ ones answer 500, so a
	// machine can fail its checks while it keeps running.
	sick atomic.Bool
}

// machineReply is the body a dev machine answers with.
type machineReply struct {
	Machine string `json:"machine"`
	App     string `json:"app"`
	Region  string `json:"region"`
	Host    string `json:"host"`
	Path    string `json:"path"`
	Sick    bool   `json:"sick,omitempty"`
}

// listenMachine binds a machine's address and port (port 0: any free one).
func listenMachine(address string, port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(port)))
}

// serveMachine starts m's server on ln. close stops it.
func serveMachine(ln net.Listener, m *regional.Machine, log *slog.Logger) *devServer {
	d := &devServer{done: make(chan struct{})}
	reply := machineReply{Machine: m.ID, App: m.App, Region: m.Region, Host: m.Host}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_patina/sick", func(w http.ResponseWriter, r *http.Request) {
		d.sick.Store(true)
		d.answer(w, r, reply, http.StatusOK)
	})
	mux.HandleFunc("POST /_patina/well", func(w http.ResponseWriter, r *http.Request) {
		d.sick.Store(false)
		d.answer(w, r, reply, http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		if d.sick.Load() {
			status = http.StatusInternalServerError
		}
		d.answer(w, r, reply, status)
	})
	d.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("host: machine server stopped", "machine", m.ID, "err", err)
		}
	}()
	return d
}

func (d *devServer) answer(w http.ResponseWriter, r *http.Request, reply machineReply, status int) {
	reply.Path = r.URL.Path
	reply.Sick = d.sick.Load()
	w.Header().Set(ServedByHeader, reply.Machine)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(reply)
}

// close stops the server at once (open connections too) and waits for it.
func (d *devServer) close() {
	d.srv.Close()
	<-d.done
}
