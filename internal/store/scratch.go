package store

import (
	"database/sql"
	"fmt"
	"net/url"

	"github.com/mattn/go-sqlite3"
)

// scratchDriver opens connections that read the database and may write
// only TEMP tables: work tables for readers that compute over the data,
// such as subscriptions joining their changed keys against a query.
const scratchDriver = "patina-sqlite3-scratch"

func init() {
	sql.Register(scratchDriver, &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			// Work tables live in memory, never in a temporary file.
			if _, err := c.Exec("PRAGMA temp_store = MEMORY", nil); err != nil {
				return err
			}
			c.RegisterAuthorizer(scratchAuthorizer)
			return nil
		},
	})
}

func scratchAuthorizer(op int, _, _, db string) int {
	switch op {
	case authSelect, authRead, authFunction, authRecursive, authTransaction:
		return authOK
	case authInsert, authDelete, authUpdate, authCreateTempTable, authCreateTempIndex, authReindex:
		if db == "temp" {
			return authOK
		}
	}
	return authDeny
}

// OpenScratch opens a pool of one connection that reads the database and
// may create and write TEMP tables, nothing else. TEMP tables belong to a
// connection: take it with Conn and keep it. The caller closes the pool
// before the store.
func (s *Store) OpenScratch() (*sql.DB, error) {
	p := url.Values{}
	p.Set("_busy_timeout", fmt.Sprint(s.cfg.BusyTimeoutMS))
	db, err := sql.Open(scratchDriver, dsn(s.cfg.Path, p))
	if err != nil {
		return nil, fmt.Errorf("store: scratch connection: %w", err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}
