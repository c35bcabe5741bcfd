// Package shamir is HashiCorp Vault's Shamir secret sharing over GF(2^8),
// vendored unchanged from github.com/hashicorp/vault v1.21.4 (directory
// shamir/, files shamir.go and shamir_test.go) so that Cachet does not pull in
// the whole vault module, whose root licence is the BUSL, for one file.
//
// shamir.go and shamir_test.go are under the Mozilla Public License 2.0,
// whose text is in LICENSE next to them; this file, doc.go, is Cachet's own.
// Any change to the vendored files must stay under the MPL-2.0 and be
// published with Cachet's source.
//
// A share is Vault's layout: one y value per secret byte, then one byte, its
// x coordinate (never 0). The field is GF(2^8) modulo the AES polynomial
// x^8+x^4+x^3+x+1; x coordinates are a random permutation drawn from
// math/rand (they are public in any Shamir scheme), the coefficients come from
// crypto/rand.
package shamir
