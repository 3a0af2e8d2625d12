// Package rpc owns how patina's components dial each other's gRPC
// services (Lookup, AppMap): transport security and the bearer token.
package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DialOptions say how to reach a gRPC service.
type DialOptions struct {
	// Token, when set, is sent as "authorization: Bearer <token>".
	Token string
	// CAFile, when set, dials TLS and trusts the servers this CA signed;
	// without it the connection is plaintext (loopback, a private
	// network, or a mesh that encrypts).
	CAFile string
	// CertFile and KeyFile, when set with CAFile, present a client
	// certificate.
	CertFile, KeyFile string
}

// Dial returns a client connection to addr (host:port). It connects
// lazily: a server that is down shows as an error on the first call.
func Dial(addr string, o DialOptions) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if o.CAFile != "" {
		tc, err := o.tlsConfig()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: o.Token, secure: o.CAFile != ""}))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %s: %w", addr, err)
	}
	return cc, nil
}

func (o DialOptions) tlsConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("rpc: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("rpc: %s holds no PEM certificate", o.CAFile)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("rpc: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// bearer sends the token with every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false for plaintext connections: the
// operator chose to send the token that way.
func (b bearer) RequireTransportSecurity() bool { return b.secure }
