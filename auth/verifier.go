package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
	"github.com/xdg-go/stringprep"
)

const (
	// verifierScheme starts every stored password. The whole form is
	// PostgreSQL's: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>,
	// with the salt and both keys in standard base64, so that verifiers
	// can be copied between pg_authid and gearproxy's users file.
	verifierScheme = "SCRAM-SHA-256"
	// DefaultIterations is the PBKDF2 count for new verifiers: RFC 7677
	// section 4 asks for at least 4096, and it is PostgreSQL's default.
	DefaultIterations = 4096
	// MinIterations is the lowest count a verifier may carry. Anything
	// below RFC 7677's minimum makes an offline attack on a leaked users
	// file cheap, so such a file is refused rather than trusted.
	MinIterations = 4096
	// maxIterations bounds the work one authentication can cost the
	// server; a typo of an extra zero should not turn logins into a DoS.
	maxIterations = 1 << 20
	// saltSize is the length of a new salt, PostgreSQL's choice.
	saltSize = 16
	keySize  = sha256.Size
)

// ErrBadVerifier is returned for a password that is not a well-formed
// SCRAM-SHA-256 verifier.
var ErrBadVerifier = errors.New("password is not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>; make one with `gearproxy passwd`)")

// Verifier is a password as the server stores it: never the password
// itself, only the values of RFC 5802 section 3 from which no password can
// be recovered but against which both a SCRAM proof and a PLAIN password
// can be checked.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// NewVerifier derives a verifier from a password with a fresh random salt.
func NewVerifier(password string, iterations int) (Verifier, error) {
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < MinIterations || iterations > maxIterations {
		return Verifier{}, fmt.Errorf("iterations %d out of range [%d, %d]", iterations, MinIterations, maxIterations)
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return Verifier{}, err
	}
	return deriveVerifier(password, salt, iterations)
}

// deriveVerifier computes RFC 5802's StoredKey and ServerKey.
func deriveVerifier(password string, salt []byte, iterations int) (Verifier, error) {
	salted, err := saltedPassword(password, salt, iterations)
	if err != nil {
		return Verifier{}, err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return Verifier{
		Iterations: iterations,
		Salt:       salt,
		StoredKey:  stored[:],
		ServerKey:  hmacSHA256(salted, "Server Key"),
	}, nil
}

// saltedPassword is RFC 5802's Hi(Normalize(password), salt, i).
func saltedPassword(password string, salt []byte, iterations int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, prepPassword(password), salt, iterations, keySize)
}

// prepPassword applies SASLprep (RFC 4013), as RFC 5802 requires before
// hashing. Like PostgreSQL, a password that SASLprep rejects is used as its
// raw bytes instead of being refused, so any byte string can be a password;
// a SCRAM client that insists on SASLprep cannot use such a password, but
// PLAIN can.
func prepPassword(password string) string {
	if p, err := stringprep.SASLprep.Prepare(password); err == nil {
		return p
	}
	return password
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// ParseVerifier reads the PostgreSQL form of a SCRAM-SHA-256 verifier.
func ParseVerifier(s string) (Verifier, error) {
	scheme, rest, ok := strings.Cut(s, "$")
	if !ok || scheme != verifierScheme {
		return Verifier{}, ErrBadVerifier
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return Verifier{}, ErrBadVerifier
	}
	iterStr, saltStr, ok := strings.Cut(params, ":")
	if !ok {
		return Verifier{}, ErrBadVerifier
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return Verifier{}, ErrBadVerifier
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil {
		return Verifier{}, ErrBadVerifier
	}
	if iter < MinIterations || iter > maxIterations {
		return Verifier{}, fmt.Errorf("verifier iterations %d out of range [%d, %d]", iter, MinIterations, maxIterations)
	}
	enc := base64.StdEncoding.Strict()
	salt, err1 := enc.DecodeString(saltStr)
	stored, err2 := enc.DecodeString(storedStr)
	server, err3 := enc.DecodeString(serverStr)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Verifier{}, fmt.Errorf("%w: %v", ErrBadVerifier, err)
	}
	if len(salt) == 0 || len(stored) != keySize || len(server) != keySize {
		return Verifier{}, ErrBadVerifier
	}
	return Verifier{Iterations: iter, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}

// String is the PostgreSQL form, the value of a user's password key.
func (v Verifier) String() string {
	enc := base64.StdEncoding
	return verifierScheme + "$" + strconv.Itoa(v.Iterations) + ":" + enc.EncodeToString(v.Salt) +
		"$" + enc.EncodeToString(v.StoredKey) + ":" + enc.EncodeToString(v.ServerKey)
}

// CheckPassword reports whether password matches, for PLAIN. It always
// does the full key derivation and compares in constant time, so its cost
// says nothing about how close a guess was.
func (v Verifier) CheckPassword(password string) bool {
	salted, err := saltedPassword(password, v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	stored := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	return subtle.ConstantTimeCompare(stored[:], v.StoredKey) == 1
}

// credentials is the verifier as xdg-go/scram's server wants it: the salt
// as a string of raw bytes.
func (v Verifier) credentials() scram.StoredCredentials {
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
		StoredKey:  v.StoredKey,
		ServerKey:  v.ServerKey,
	}
}
