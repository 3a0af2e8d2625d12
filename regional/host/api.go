package host

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/patina-db/patina/regional"
)

// maxRequestBytes bounds a request body.
const maxRequestBytes = 1 << 20

// ListResponse is GET /v1/machines.
type ListResponse struct {
	Machines []regional.Machine `json:"machines"`
}

// ErrorResponse is every error's body.
type ErrorResponse struct {
	Error string `json:"error"`
}

// apiHandler serves the host's HTTP API:
//
//	POST   /v1/machines             create (MachineSpec) → 201 record
//	GET    /v1/machines             → ListResponse
//	GET    /v1/machines/{id}        → record
//	POST   /v1/machines/{id}/start  → record
//	POST   /v1/machines/{id}/stop   → record
//	DELETE /v1/machines/{id}        → the destroyed record
//	POST   /v1/republish            full re-publish now → RepublishStats
func (h *Host) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/machines", func(w http.ResponseWriter, r *http.Request) {
		var spec MachineSpec
		if err := decodeBody(w, r, &spec); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		m, err := h.Create(r.Context(), spec)
		reply(w, http.StatusCreated, m, err)
	})
	mux.HandleFunc("GET /v1/machines", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ListResponse{Machines: h.List()})
	})
	mux.HandleFunc("GET /v1/machines/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := h.Get(r.PathValue("id"))
		reply(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("POST /v1/machines/{id}/start", func(w http.ResponseWriter, r *http.Request) {
		m, err := h.Start(r.Context(), r.PathValue("id"))
		reply(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("POST /v1/machines/{id}/stop", func(w http.ResponseWriter, r *http.Request) {
		m, err := h.Stop(r.Context(), r.PathValue("id"))
		reply(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("DELETE /v1/machines/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := h.Destroy(r.Context(), r.PathValue("id"))
		reply(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("POST /v1/republish", func(w http.ResponseWriter, r *http.Request) {
		stats, err := h.Republish(r.Context())
		if err != nil {
			writeError(w, http.StatusBadGateway, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, stats)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return h.authorize(mux)
}

// authorize requires the bearer token when one is configured.
func (h *Host) authorize(next http.Handler) http.Handler {
	token := h.cfg.API.Token
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decodeBody reads one JSON value with no unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, out any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: want a JSON object")
		}
		return fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return errors.New("body: more than one JSON value")
	}
	return nil
}

// reply writes a record, or the error mapped to its status.
func reply(w http.ResponseWriter, status int, m regional.Machine, err error) {
	if err != nil {
		writeError(w, errorStatus(err), err.Error())
		return
	}
	writeJSON(w, status, m)
}

func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorResponse{Error: strings.TrimSpace(msg)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
