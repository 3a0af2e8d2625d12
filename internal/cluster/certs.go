package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
)

// CA is a cluster certificate authority: every node certificate it signs
// is a member's.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA creates a CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"patina"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// NodeCert is a node's certificate and key, PEM-encoded.
type NodeCert struct {
	CertPEM, KeyPEM []byte
}

// Issue signs a node certificate for name with the given IP and DNS
// subject alternative names, valid for both ends of a connection.
func (ca *CA) Issue(name string, ips []net.IP, dns []string) (*NodeCert, error) {
	if name == "" {
		return nil, errors.New("certificate: a node name is required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"patina"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     append([]string{name}, dns...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &NodeCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// WriteCA writes dir/ca.pem and dir/ca-key.pem (the key readable by its
// owner only).
func (ca *CA) Write(dir string) error {
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writePair(filepath.Join(dir, "ca.pem"), ca.PEM, filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

// Write writes dir/name.pem and dir/name-key.pem.
func (nc *NodeCert) Write(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writePair(filepath.Join(dir, name+".pem"), nc.CertPEM, filepath.Join(dir, name+"-key.pem"), nc.KeyPEM)
}

// writePair writes a certificate and its key, both new, or neither: with
// either file there already, nothing is written, and a failure after the
// key removes it, so that no certificate sits beside another's key.
func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if _, err := os.Lstat(certPath); err == nil {
		return fmt.Errorf("write %s: %w", certPath, fs.ErrExist)
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew refuses to overwrite: replacing a CA by accident splits a
// cluster.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// LoadCA reads dir/ca.pem and dir/ca-key.pem.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("load ca: %s is not a patina CA", dir)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// TLSFiles name a node's PEM files.
type TLSFiles struct {
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Credentials are what mutual TLS needs: the cluster CA and this node's
// certificate.
type Credentials struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// statelessResetKey derives the QUIC stateless reset key from the
// member's private key, so that it is secret and the same after a
// restart. A member that crashed and came back on its address then
// answers packets of its old connections with a reset its peers can
// verify, and they drop those connections at once instead of writing
// into them until the idle timeout.
func (c *Credentials) statelessResetKey() (*quic.StatelessResetKey, error) {
	if len(c.KeyPEM) == 0 {
		return nil, errors.New("quic stateless reset key: no private key")
	}
	k, err := hkdf.Key(sha256.New, c.KeyPEM, nil, "patina quic stateless reset", len(quic.StatelessResetKey{}))
	if err != nil {
		return nil, fmt.Errorf("quic stateless reset key: %w", err)
	}
	var key quic.StatelessResetKey
	copy(key[:], k)
	return &key, nil
}

// LoadCredentials reads the PEM files.
func LoadCredentials(f TLSFiles) (*Credentials, error) {
	var c Credentials
	for _, x := range []struct {
		path string
		dst  *[]byte
		key  string
	}{{f.CAFile, &c.CAPEM, "ca_file"}, {f.CertFile, &c.CertPEM, "cert_file"}, {f.KeyFile, &c.KeyPEM, "key_file"}} {
		if x.path == "" {
			return nil, fmt.Errorf("gossip.tls.%s is required: the data plane has no plaintext mode", x.key)
		}
		data, err := os.ReadFile(x.path)
		if err != nil {
			return nil, fmt.Errorf("gossip.tls.%s: %w", x.key, err)
		}
		*x.dst = data
	}
	return &c, nil
}

// DevCredentials issues credentials from a CA made on the spot: for
// development clusters and tests, never for production.
func DevCredentials(ca *CA, name string) (*Credentials, error) {
	nc, err := ca.Issue(name, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	return &Credentials{CAPEM: ca.PEM, CertPEM: nc.CertPEM, KeyPEM: nc.KeyPEM}, nil
}

// tlsConfig is the mutual-TLS configuration for both ends of a QUIC
// connection: present our certificate, require the peer's, and accept only
// certificates the cluster CA signed. Host names are not checked: in a
// cluster, membership is the CA's signature.
func (c *Credentials) tlsConfig() (*tls.Config, error) {
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM) {
		return nil, errors.New("tls: no certificate in the CA file")
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("tls: peer sent no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("tls: peer certificate: %w", err)
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("tls: peer certificate not signed by the cluster CA: %w", err)
		}
		return nil
	}
	return &tls.Config{
		Certificates:          []tls.Certificate{pair},
		ClientAuth:            tls.RequireAnyClientCert, // verified below, for both directions alike
		InsecureSkipVerify:    true,                     // likewise: chain checked by VerifyPeerCertificate
		VerifyPeerCertificate: verify,
		NextProtos:            []string{alpn},
		MinVersion:            tls.VersionTLS13,
		// A resumed session would skip VerifyPeerCertificate.
		SessionTicketsDisabled: true,
	}, nil
}

// alpn names patina's node-to-node protocol.
const alpn = "patina-wire/1"
