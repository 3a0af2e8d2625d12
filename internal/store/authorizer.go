package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"

	"github.com/mattn/go-sqlite3"
)

// SQLite authorizer action codes (sqlite3.h).
const (
	authCreateIndex     = 1
	authCreateTable     = 2
	authCreateTempIndex = 3
	authCreateTempTable = 4
	authCreateTrigger   = 7
	authCreateView      = 8
	authDelete          = 9
	authDropIndex       = 10
	authDropTable       = 11
	authDropTrigger     = 16
	authDropView        = 17
	authInsert          = 18
	authRead            = 20
	authSelect          = 21
	authTransaction     = 22
	authUpdate          = 23
	authAlterTable      = 26
	authReindex         = 27 // asked when an index is built
	authFunction        = 31
	authRecursive       = 33

	authOK   = 0
	authDeny = 1
)

// readerDriver opens reader connections that may only read: the
// authorizer refuses every statement that is not a query, including
// PRAGMAs (which could turn query_only off) and ATTACH.
const readerDriver = "patina-sqlite3-reader"

func init() {
	sql.Register(readerDriver, &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			c.RegisterAuthorizer(readOnlyAuthorizer)
			return nil
		},
	})
}

func readOnlyAuthorizer(op int, _, _, _ string) int {
	switch op {
	case authSelect, authRead, authFunction, authRecursive:
		return authOK
	}
	return authDeny
}

// installAuthorizer limits what client statements may do on the writer
// connection: read and write rows of the main database, nothing else (no
// DDL, no PRAGMA, no ATTACH, no transaction control, no TEMP objects). The
// limit applies only while clientSQL is set, so the store's own statements
// are unaffected; it is checked when a statement is prepared, which is also
// when the capture triggers are compiled into it.
func (s *Store) installAuthorizer(ctx context.Context) error {
	err := authorizeWhile(s.writer, &s.clientSQL, func(op int, _, db string) int {
		switch op {
		case authSelect, authRead, authFunction, authRecursive:
			return authOK
		case authInsert, authUpdate, authDelete:
			if db == "main" {
				return authOK
			}
		}
		return authDeny
	})
	if err != nil {
		return fmt.Errorf("install authorizer: %w", err)
	}
	return nil
}

// authorizeWhile has rule judge what statements prepared on conn do
// while on is set, and allows everything otherwise: the caller's
// statements are held to rule, the store's own are not.
func authorizeWhile(conn *sql.Conn, on *atomic.Bool, rule func(op int, table, db string) int) error {
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		c.RegisterAuthorizer(func(op int, arg1, _, db string) int {
			if !on.Load() {
				return authOK
			}
			return rule(op, arg1, db)
		})
		return nil
	})
}
