// Package hsm implements keys.Backend over a PKCS#11 token: it owns the
// PKCS#11 module handle of the process, one token's login and session pool,
// the token objects that hold Cachet's root and the keys derived from it, and
// the AES-GCM and ECDSA calls that use them.
//
// # Key hierarchy on the token
//
// A generation is in one of two key formats (keys.Format). Format 2, which
// new generations use, keeps no root on the token and never lets a derived
// secret reach the host: the KEKs and a P-256 wrapping key are made with
// C_DeriveKey from a derive-only root that exists only during Provision, and
// P-256 keys are generated in the token, wrapped into the store and unwrapped
// back as non-extractable objects. format2.go describes it and why. Format 1,
// below, is kept for appliances provisioned before format 2, until they
// rotate:
//
// Provision imports the 32-byte root secret as a sign-only, sensitive,
// non-extractable CKK_GENERIC_SECRET object labelled "cachet/g<gen>/root".
// Every other key is HKDF-Expand(SHA-256, root, info, 32), which for a single
// output block is HMAC-SHA256(root, info || 0x01) (RFC 5869 section 2.3). The
// token computes that HMAC itself with CKM_SHA256_HMAC, so the root never
// leaves it; the derived bytes pass through this process once, when the key
// is first needed, and are imported as sensitive, non-extractable token
// objects and zeroed:
//
//	cachet/g<gen>/root              CKO_SECRET_KEY  CKK_GENERIC_SECRET  CKA_SIGN only
//	cachet/g<gen>/kek/<purpose>     CKO_SECRET_KEY  CKK_AES (256)       CKA_ENCRYPT, CKA_DECRYPT
//	cachet/g<gen>/p256/<label>      CKO_PRIVATE_KEY CKK_EC (P-256)      CKA_SIGN only
//	cachet/g<gen>/p256/<label>      CKO_PUBLIC_KEY  CKK_EC (P-256)      CKA_EC_POINT
//
// The info strings are those of package keys, so a token provisioned with a
// root derives exactly the keys the TPM backend derives in memory from the
// same root, and a restore onto an empty token brings every key back.
//
// # What this package does not do
//
// It does not generate, split or store the root (package ceremony does), it
// never reads a secret back out of the token, and it does not pick a module
// path or PIN: the caller passes them in Options. It does not zero memory it
// does not own: the C buffers that miekg/pkcs11 allocates for plaintexts and
// HMAC outputs are freed without being cleared, and Go's crypto/ecdsa keeps
// its own copy of a derived scalar until the garbage collector reclaims it.
//
// # Concurrency
//
// A PKCS#11 session must not be used by two threads at once (SoftHSM 2.6
// crashes the process with SIGSEGV when it is), so every operation checks one
// session out of a pool for its whole C_*Init / C_* pair. SoftHSM 2.6.1 also
// corrupts a token object that C_CreateObject writes while another thread
// reads objects, so creating or destroying an object excludes every other
// call into the module for its duration; that happens once per key. The
// module is initialized once per process and shared by every Backend that
// uses it, and finalized when the last one closes.
//
// # Specification
//
// PKCS#11 Cryptographic Token Interface Base Specification v2.40 (function
// sections are cited where the calls are made) and PKCS#11 Current Mechanisms
// Specification v2.40 (CKM_AES_GCM, CKM_SHA256_HMAC, CKM_ECDSA,
// CKM_AES_ECB_ENCRYPT_DATA, CKM_AES_KEY_WRAP_PAD, CKM_EC_KEY_PAIR_GEN).
package hsm
