package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

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
	if n, err := io.Copy(w, snap); err != nil {
		// Headers are sent: the short body is the error the client sees.
		s.opts.Logger.Warn("backup stream ended early", "sent", n, "size", snap.Size(), "err", err)
	}
}
