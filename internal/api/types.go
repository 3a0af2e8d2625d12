package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/patina-db/patina/internal/subs"
)

// Statement is one SQL statement with parameters. On the wire it is any of
//
//	"SQL"
//	["SQL", [positional, ...]]
//	["SQL", {"name": value, ...}]
//	{"query": "SQL", "params": [...], "named_params": {...}}
//
// Parameter values are JSON null, numbers (integers stay INTEGER), strings
// (TEXT), booleans (1 or 0) or arrays of byte values 0–255 (BLOB).
type Statement struct {
	Query       string         `json:"query"`
	Params      []any          `json:"params,omitempty"`
	NamedParams map[string]any `json:"named_params,omitempty"`
}

// UnmarshalJSON accepts every statement form listed on Statement.
func (s *Statement) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return errors.New("empty statement")
	}
	switch data[0] {
	case '"':
		return json.Unmarshal(data, &s.Query)
	case '[':
		var parts []json.RawMessage
		if err := json.Unmarshal(data, &parts); err != nil {
			return err
		}
		if len(parts) < 1 || len(parts) > 2 {
			return fmt.Errorf("statement array must be [\"SQL\"] or [\"SQL\", params], got %d elements", len(parts))
		}
		if err := json.Unmarshal(parts[0], &s.Query); err != nil {
			return fmt.Errorf("statement SQL must be a string: %w", err)
		}
		if len(parts) == 2 {
			p := bytes.TrimSpace(parts[1])
			switch {
			case len(p) > 0 && p[0] == '[':
				params, err := decodeParams(p)
				if err != nil {
					return err
				}
				s.Params = params
			case len(p) > 0 && p[0] == '{':
				named, err := decodeNamed(p)
				if err != nil {
					return err
				}
				s.NamedParams = named
			default:
				return errors.New("statement parameters must be an array or an object")
			}
		}
		return nil
	case '{':
		var raw struct {
			Query       *string         `json:"query"`
			Params      json.RawMessage `json:"params"`
			NamedParams json.RawMessage `json:"named_params"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if raw.Query == nil {
			return errors.New(`statement object needs "query"`)
		}
		s.Query = *raw.Query
		if len(raw.Params) > 0 && string(raw.Params) != "null" {
			params, err := decodeParams(raw.Params)
			if err != nil {
				return err
			}
			s.Params = params
		}
		if len(raw.NamedParams) > 0 && string(raw.NamedParams) != "null" {
			named, err := decodeNamed(raw.NamedParams)
			if err != nil {
				return err
			}
			s.NamedParams = named
		}
		return nil
	}
	return errors.New("a statement must be a string, an array or an object")
}

func decodeParams(data []byte) ([]any, error) {
	if out, ok := scanParams(data); ok {
		return out, nil
	}
	return decodeParamsJSON(data)
}

// decodeParamsJSON is decodeParams' general path.
func decodeParamsJSON(data []byte) ([]any, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	out := make([]any, len(raw))
	for i, r := range raw {
		v, err := decodeValue(r)
		if err != nil {
			return nil, fmt.Errorf("parameter %d: %w", i+1, err)
		}
		out[i] = v
	}
	return out, nil
}

func decodeNamed(data []byte) (map[string]any, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("named parameters: %w", err)
	}
	out := make(map[string]any, len(raw))
	for k, r := range raw {
		v, err := decodeValue(r)
		if err != nil {
			return nil, fmt.Errorf("parameter %q: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// decodeValue turns one JSON parameter into a SQLite-ready Go value.
func decodeValue(r json.RawMessage) (any, error) {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return nil, errors.New("empty value")
	}
	switch r[0] {
	case 'n':
		return nil, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(r, &b); err != nil {
			return nil, err
		}
		if b {
			return int64(1), nil
		}
		return int64(0), nil
	case '"':
		var s string
		err := json.Unmarshal(r, &s)
		return s, err
	case '[':
		var bs []int
		if err := json.Unmarshal(r, &bs); err != nil {
			return nil, errors.New("an array value must be a blob: byte values 0-255")
		}
		blob := make([]byte, len(bs))
		for i, b := range bs {
			if b < 0 || b > 255 {
				return nil, fmt.Errorf("blob byte %d out of range: %d", i, b)
			}
			blob[i] = byte(b)
		}
		return blob, nil
	case '{':
		return nil, errors.New("objects are not SQL values")
	}
	return numberValue(string(r))
}

// MarshalJSON writes the object form.
func (s Statement) MarshalJSON() ([]byte, error) {
	if b, ok := s.appendPlain(nil); ok {
		return b, nil
	}
	return s.marshalJSON()
}

// appendPlain writes the object form without reflection when every
// parameter is positional and nil, a string, an integer, a float or a
// bool: the bytes are marshalJSON's, byte for byte. It reports false for
// anything else.
func (s Statement) appendPlain(b []byte) ([]byte, bool) {
	if len(s.NamedParams) > 0 {
		return nil, false
	}
	b = append(b, `{"query":`...)
	b = appendJSONString(b, s.Query)
	if len(s.Params) > 0 {
		b = append(b, `,"params":[`...)
		for i, v := range s.Params {
			if i > 0 {
				b = append(b, ',')
			}
			switch x := v.(type) {
			case nil:
				b = append(b, "null"...)
			case string:
				b = appendJSONString(b, x)
			case int64:
				b = strconv.AppendInt(b, x, 10)
			case int:
				b = strconv.AppendInt(b, int64(x), 10)
			case bool:
				b = strconv.AppendBool(b, x)
			case float64:
				if math.IsNaN(x) || math.IsInf(x, 0) {
					b = append(b, "null"...)
					break
				}
				r, _ := real(x).MarshalJSON()
				b = append(b, r...)
			default:
				return nil, false
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), true
}

// appendJSONString writes s as encoding/json does: printable ASCII
// without quotes, backslashes or HTML's <, > and & as it is, anything
// else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// marshalJSON is MarshalJSON's general path.
func (s Statement) marshalJSON() ([]byte, error) {
	type plain struct {
		Query       string         `json:"query"`
		Params      []any          `json:"params,omitempty"`
		NamedParams map[string]any `json:"named_params,omitempty"`
	}
	p := plain{Query: s.Query}
	for i, v := range s.Params {
		if err := checkParam(v); err != nil {
			return nil, fmt.Errorf("parameter %d: %w", i+1, err)
		}
		p.Params = append(p.Params, EncodeValue(v))
	}
	if len(s.NamedParams) > 0 {
		p.NamedParams = make(map[string]any, len(s.NamedParams))
		for k, v := range s.NamedParams {
			if err := checkParam(v); err != nil {
				return nil, fmt.Errorf("parameter %q: %w", k, err)
			}
			p.NamedParams[k] = EncodeValue(v)
		}
	}
	return json.Marshal(p)
}

// checkParam refuses a parameter the wire cannot carry as itself: an
// unsigned integer beyond int64 would arrive as a REAL, another number.
func checkParam(v any) error {
	switch x := v.(type) {
	case uint64:
		if x > math.MaxInt64 {
			return fmt.Errorf("integer %d does not fit in SQLite's INTEGER (int64)", x)
		}
	case uint:
		if uint64(x) > math.MaxInt64 {
			return fmt.Errorf("integer %d does not fit in SQLite's INTEGER (int64)", x)
		}
	}
	return nil
}

// EncodeValue prepares a SQLite value for JSON: BLOBs become arrays of
// byte values, so they stay distinct from TEXT.
func EncodeValue(v any) any {
	if f, ok := v.(float32); ok {
		v = float64(f) // a REAL, as database/sql binds it, not "2"
	}
	if b, ok := v.([]byte); ok {
		out := make([]int, len(b))
		for i, c := range b {
			out[i] = int(c)
		}
		return out
	}
	if f, ok := v.(float64); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil // JSON has no NaN or Infinity; SQLite stores NaN as NULL anyway
		}
		return real(f)
	}
	return v
}

// real is a REAL that keeps its decimal point in JSON (1.0, not 1), so a
// reader can tell it from an INTEGER.
type real float64

func (r real) MarshalJSON() ([]byte, error) {
	b := strconv.AppendFloat(nil, float64(r), 'g', -1, 64)
	if !bytes.ContainsAny(b, ".eE") {
		b = append(b, '.', '0')
	}
	return b, nil
}

// ExecResponse answers POST /v1/transactions.
type ExecResponse struct {
	Results []ExecResult `json:"results"`
	Time    float64      `json:"time"`
	// Version is the node's version the transaction became, nil when it
	// changed nothing.
	Version *uint64 `json:"version"`
	ActorID string  `json:"actor_id"`
	// CommittedAt is when the commit returned, by the node's clock;
	// absent when the transaction did not commit.
	CommittedAt *time.Time `json:"committed_at,omitempty"`
}

// ExecResult is one statement's outcome: rows affected and seconds taken,
// or the error that rolled the transaction back.
type ExecResult struct {
	RowsAffected *int64  `json:"rows_affected,omitempty"`
	Time         float64 `json:"time,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// ErrorResponse is the body of any other failed request.
type ErrorResponse struct {
	Error string `json:"error"`
}

// QueryEvent is one NDJSON line of a query stream. Exactly one field is set.
type QueryEvent struct {
	Columns []string     `json:"columns,omitempty"`
	Row     *RowEvent    `json:"row,omitempty"`
	EOQ     *EOQ         `json:"eoq,omitempty"`
	Change  *ChangeEvent `json:"change,omitempty"`
	Error   *string      `json:"error,omitempty"`
}

// ChangeEvent is one change of a subscription's result.
type ChangeEvent struct {
	Kind     string // "insert", "update" or "delete"
	RowID    int64
	Cells    []any
	ChangeID uint64
}

// MarshalJSON writes [kind, rowid, [cells], change_id].
func (c ChangeEvent) MarshalJSON() ([]byte, error) {
	cells := make([]any, len(c.Cells))
	for i, v := range c.Cells {
		cells[i] = EncodeValue(v)
	}
	return json.Marshal([]any{c.Kind, c.RowID, cells, c.ChangeID})
}

// UnmarshalJSON reads [kind, rowid, [cells], change_id].
func (c *ChangeEvent) UnmarshalJSON(data []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return err
	}
	if len(parts) != 4 {
		return fmt.Errorf("change: want [kind, rowid, cells, change_id], got %d elements", len(parts))
	}
	if err := json.Unmarshal(parts[0], &c.Kind); err != nil {
		return fmt.Errorf("change kind: %w", err)
	}
	switch c.Kind {
	case "insert", "update", "delete":
	default:
		return fmt.Errorf("change kind %q: want insert, update or delete", c.Kind)
	}
	if err := json.Unmarshal(parts[1], &c.RowID); err != nil {
		return fmt.Errorf("change row id: %w", err)
	}
	cells, err := decodeParams(parts[2])
	if err != nil {
		return fmt.Errorf("change cells: %w", err)
	}
	c.Cells = cells
	if err := json.Unmarshal(parts[3], &c.ChangeID); err != nil {
		return fmt.Errorf("change id: %w", err)
	}
	return nil
}

// RowEvent is a row: its position in the result (from 1) and its cells.
type RowEvent struct {
	RowID int64
	Cells []any
}

// MarshalJSON writes [rowid, [cells]].
func (r RowEvent) MarshalJSON() ([]byte, error) {
	cells := make([]any, len(r.Cells))
	for i, c := range r.Cells {
		cells[i] = EncodeValue(c)
	}
	return json.Marshal([]any{r.RowID, cells})
}

// UnmarshalJSON reads [rowid, [cells]].
func (r *RowEvent) UnmarshalJSON(data []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return err
	}
	if len(parts) != 2 {
		return fmt.Errorf("row: want [rowid, cells], got %d elements", len(parts))
	}
	if err := json.Unmarshal(parts[0], &r.RowID); err != nil {
		return fmt.Errorf("row id: %w", err)
	}
	cells, err := decodeParams(parts[1])
	if err != nil {
		return fmt.Errorf("row cells: %w", err)
	}
	r.Cells = cells
	return nil
}

// EOQ ends a query's rows.
type EOQ struct {
	Time float64 `json:"time"`
	// ChangeID is the subscription's last change the rows include
	// (subscriptions only).
	ChangeID *uint64 `json:"change_id,omitempty"`
}

// MigrationResponse answers POST /v1/migrations.
type MigrationResponse struct {
	Time float64 `json:"time"`
}

// ReloadResponse answers POST /v1/admin/reload.
type ReloadResponse struct {
	Time float64 `json:"time"`
	// Tables are the replicated tables after the reload.
	Tables []string `json:"tables"`
	// Changed is true when the schema differs from before the reload.
	Changed bool `json:"changed"`
}

// BackupActorHeader names, on GET /v1/admin/backup, the actor id of the
// node the snapshot was taken from.
const BackupActorHeader = "Patina-Actor-Id"

// HealthResponse answers GET /v1/health.
type HealthResponse struct {
	Response Health `json:"response"`
}

// Health is a node's replication health.
type Health struct {
	Gaps      uint64  `json:"gaps"`
	Members   int     `json:"members"`
	P99Lag    float64 `json:"p99_lag"`
	QueueSize int     `json:"queue_size"`
	// Head is this node's last version, ActorID its actor.
	Head    uint64 `json:"head"`
	ActorID string `json:"actor_id"`
}

// MembersResponse answers GET /v1/members.
type MembersResponse struct {
	Members []Member `json:"members"`
}

// Member is a cluster member as the answering agent sees it.
type Member struct {
	ID     string      `json:"id"` // actor id
	Name   string      `json:"name"`
	Region string      `json:"region"`
	State  string      `json:"state"` // alive, suspect, dead, left
	Addrs  MemberAddrs `json:"addrs"`
	RTTSec float64     `json:"rtt"` // seconds, last SWIM probe; 0 when not measured
	Self   bool        `json:"self,omitempty"`
}

// MemberAddrs are a member's announced addresses.
type MemberAddrs struct {
	Gossip string `json:"gossip,omitempty"`
	QUIC   string `json:"quic,omitempty"`
	API    string `json:"api,omitempty"`
	GRPC   string `json:"grpc,omitempty"`
}

// UpdateEvent is one NDJSON line of POST /v1/updates/{table}:
// {"notify":["update"|"delete",[pk values]]}, or {"error":"…"} when the
// stream ends because the consumer fell behind.
type UpdateEvent struct {
	Notify *Notify `json:"notify,omitempty"`
	Error  *string `json:"error,omitempty"`
}

// Notify is a changed row: its kind and primary-key values.
type Notify struct {
	Kind string // "update" or "delete"
	PK   []any
}

// MarshalJSON writes ["update"|"delete", [pk values]].
func (n Notify) MarshalJSON() ([]byte, error) {
	pk := make([]any, len(n.PK))
	for i, v := range n.PK {
		pk[i] = EncodeValue(v)
	}
	return json.Marshal([]any{n.Kind, pk})
}

// UnmarshalJSON reads ["update"|"delete", [pk values]].
func (n *Notify) UnmarshalJSON(data []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil || len(parts) != 2 {
		return fmt.Errorf("notify: want [kind, [pk]]")
	}
	if err := json.Unmarshal(parts[0], &n.Kind); err != nil {
		return fmt.Errorf("notify kind: %w", err)
	}
	pk, err := decodeParams(parts[1])
	if err != nil {
		return fmt.Errorf("notify pk: %w", err)
	}
	n.PK = pk
	return nil
}

// NewUpdateEvent turns a fan-out notification into its wire form.
func NewUpdateEvent(n subs.Notify) UpdateEvent {
	kind := "update"
	if n.Deleted {
		kind = "delete"
	}
	pk := make([]any, len(n.PK))
	for i, v := range n.PK {
		pk[i] = v.Go()
	}
	return UpdateEvent{Notify: &Notify{Kind: kind, PK: pk}}
}

// ClusterStatsResponse answers GET /v1/debug/cluster: counters of the
// data plane since start (empty for an agent running alone).
type ClusterStatsResponse struct {
	Stats map[string]uint64 `json:"stats"`
}
