package host

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/patina-db/patina/regional"
)

// lockTimeout is how long opening the bbolt file waits for another
// process's lock before giving up: two hosts on one file would each
// believe they own its machines.
const lockTimeout = time.Second

// db is the host's bbolt file: one record per machine in
// regional.BucketMachines, keyed by machine id.
type db struct {
	bolt *bolt.DB
	path string
}

// openDB opens (or creates) the file and its bucket.
func openDB(path string) (*db, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("host: db %s: locked by another process (is another host running on it?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("host: db %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(regional.BucketMachines)
		return err
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("host: db %s: %w", path, err)
	}
	return &db{bolt: b, path: path}, nil
}

// unreadable is a stored record that could not be decoded.
type unreadable struct {
	key string
	err error
}

// load reads every record. Records that do not decode are returned
// apart, with their error; they are never rewritten here.
func (d *db) load() (records []regional.Machine, bad []unreadable, err error) {
	err = d.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(regional.BucketMachines).ForEach(func(k, v []byte) error {
			m, err := regional.Decode(k, v)
			if err != nil {
				bad = append(bad, unreadable{key: string(k), err: err})
				return nil
			}
			records = append(records, m)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("host: db %s: load: %w", d.path, err)
	}
	return records, bad, nil
}

// put stores a record, durably, under its id.
func (d *db) put(m *regional.Machine) error {
	value, err := m.Encode()
	if err != nil {
		return fmt.Errorf("host: db: %w", err)
	}
	err = d.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(regional.BucketMachines).Put([]byte(m.ID), value)
	})
	if err != nil {
		return fmt.Errorf("host: db %s: put %q: %w", d.path, m.ID, err)
	}
	return nil
}

// delete removes the record stored under id.
func (d *db) delete(id string) error {
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(regional.BucketMachines).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("host: db %s: delete %q: %w", d.path, id, err)
	}
	return nil
}

func (d *db) close() error { return d.bolt.Close() }
