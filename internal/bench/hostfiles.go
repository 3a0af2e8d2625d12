package bench

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/patina-db/patina/regional"
)

// HostFilesOptions describe the hosts' bbolt files WriteHostFiles makes.
type HostFilesOptions struct {
	Dir      string
	Hosts    int
	Machines int // in all, spread evenly over the hosts
	// Checks per machine.
	Checks int
	// Region of every machine (default "ams").
	Region string
}

// WriteHostFiles writes bbolt files as hosts keep them, with machine
// records whose ids are spread unevenly over the key space (a hash
// prefix), and returns their paths. The same options always write the
// same records: see HostMachine.
func WriteHostFiles(o HostFilesOptions) ([]string, error) {
	if o.Hosts < 1 {
		return nil, fmt.Errorf("bench: host files: %d hosts", o.Hosts)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for h := 0; h < o.Hosts; h++ {
		path := filepath.Join(o.Dir, fmt.Sprintf("host-%d.db", h))
		db, err := bolt.Open(path, 0o644, &bolt.Options{NoSync: true})
		if err != nil {
			return nil, err
		}
		// Machine i lives on host i % Hosts; records go in by the
		// thousand per transaction.
		for i := h; i < o.Machines || i == h; i += 1000 * o.Hosts {
			err = db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists(regional.BucketMachines)
				if err != nil {
					return err
				}
				for j := i; j < i+1000*o.Hosts && j < o.Machines; j += o.Hosts {
					m := HostMachine(o, j)
					v, err := m.Encode()
					if err != nil {
						return err
					}
					if err := b.Put([]byte(m.ID), v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				break
			}
		}
		if err == nil {
			err = db.Sync()
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("bench: host file %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// HostMachine is machine i of the files WriteHostFiles writes.
func HostMachine(o HostFilesOptions, i int) regional.Machine {
	region := o.Region
	if region == "" {
		region = "ams"
	}
	h := fnv.New32a()
	fmt.Fprint(h, i)
	m := regional.Machine{
		V:         regional.RecordVersion,
		ID:        fmt.Sprintf("%08x-%d", h.Sum32(), i),
		App:       fmt.Sprintf("app-%d", i%997),
		Region:    region,
		Host:      fmt.Sprintf("host-%d", i%o.Hosts),
		Address:   fmt.Sprintf("fdaa:0:1::%x", i%65536),
		Port:      8080,
		State:     regional.StateStarted,
		Image:     "registry.internal/app:v1",
		UpdatedAt: 1_700_000_000_000 + int64(i),
	}
	for c := 0; c < o.Checks; c++ {
		m.Checks = append(m.Checks, regional.Check{Name: fmt.Sprintf("http-%d", c), Kind: "http", Path: "/health",
			Status: regional.CheckPassing, Output: "200 OK", UpdatedAt: m.UpdatedAt})
	}
	return m
}
