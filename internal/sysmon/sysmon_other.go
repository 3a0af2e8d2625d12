//go:build !linux

package sysmon

import (
	"context"
	"errors"
)

// Thread is implemented on Linux only.
func Thread() (int, error) { return 0, errors.ErrUnsupported }

// Batch is implemented on Linux only: elsewhere it does nothing.
func Batch(ctx context.Context) (int, error) { return 0, errors.ErrUnsupported }
