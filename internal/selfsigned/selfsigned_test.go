package selfsigned

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEnsureMakesAVerifiableChainAndKeepsIt(t *testing.T) {
	dir := t.TempDir()
	f, err := Ensure(dir, []string{"127.0.0.1", "host-a"}, time.Hour)
	require.NoError(t, err)
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	caPEM, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	for _, host := range []string{"127.0.0.1", "host-a"} {
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, host)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	require.Error(t, err, "only the hosts asked for")
	st, err := os.Stat(f.Key)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the key is private")

	before, _ := os.ReadFile(f.Cert)
	_, err = Ensure(dir, []string{"elsewhere"}, time.Hour)
	require.NoError(t, err)
	after, _ := os.ReadFile(f.Cert)
	require.Equal(t, before, after, "existing certificates are kept across restarts")
}
