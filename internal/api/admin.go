package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/patina-db/patina/internal/store"
)

// handleReload re-reads the agent's schema files and applies them with the
// rules of migrations: only additions; anything destructive is refused
// whole with 400 naming the table and column.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if len(s.opts.SchemaPaths) == 0 {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: "this agent has no schema files to reload: db.schema_paths is empty"})
		return
	}
	start := nowFunc()
	text, err := store.ReadSchemaFiles(s.opts.SchemaPaths)
	if err != nil {
		// The node's own files: its fault, not the request's.
		s.opts.Logger.Error("schema reload failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: fmt.Sprintf("read schema files: %v", err)})
		return
	}
	before := s.store.Schema()
	if err := s.store.ApplySchemaSQL(r.Context(), text); err != nil {
		var se *store.SchemaError
		status := http.StatusInternalServerError
		if errors.As(err, &se) {
			status = http.StatusBadRequest
		} else {
			s.opts.Logger.Error("schema reload failed", "err", err)
		}
		writeJSON(w, status, ErrorResponse{Error: err.Error()})
		return
	}
	after := s.store.Schema()
	if after != before {
		s.opts.Logger.Info("schema reloaded", "tables", after.TableNames())
	}
	writeJSON(w, http.StatusOK, ReloadResponse{Time: sinceSeconds(start), Tables: nonNil(after.TableNames()), Changed: after != before})
}

// handleBackup streams a consistent snapshot of the database, a plain
// SQLite file. The length is sent up front, so a client sees a stream cut
// short as an error rather than a shorter file.
func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request) {
	snap, err := s.store.Backup(r.Context())
	if err != nil {
		s.opts.Logger.Error("backup failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: err.Error()})
		return
	}
	defer snap.Close()
	w.Header().Set("Content-Type", "application/vnd.sqlite3")
	w.Header().Set("Content-Length", strconv.FormatInt(snap.Size(), 10))
	w.Header().Set("Content-Disposition", `attachment; filename="patina-backup.db"`)
	w.Header().Set(BackupActorHeader, s.store.Actor().String())
	w.WriteHeader(http.StatusOK)
	if n, err := s.sendBackup(w, snap); err != nil {
		// Headers are sent: the short body is the error the client sees.
		s.opts.Logger.Warn("backup stream ended early", "sent", n, "size", snap.Size(), "err", err)
	}
}

// backupChunk is how much of a backup goes out under one write deadline.
const backupChunk = 256 << 10

// sendBackup copies the snapshot to w a chunk at a time, each under the
// stream write timeout, as every stream of the API: a client that stops
// reading is cut off, and with it goes the copy of the database the
// snapshot holds open.
func (s *Server) sendBackup(w http.ResponseWriter, snap io.Reader) (int64, error) {
	rc := http.NewResponseController(w)
	buf := make([]byte, backupChunk)
	var sent int64
	for {
		n, rerr := io.ReadFull(snap, buf)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout))
			m, err := w.Write(buf[:n])
			sent += int64(m)
			if err != nil {
				return sent, err
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return sent, nil
		case rerr != nil:
			return sent, rerr
		}
	}
}
