module github.com/cachet-custody/cachet

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/mattn/go-sqlite3 v1.14.53 // indirect
	github.com/miekg/pkcs11 v1.1.2 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
