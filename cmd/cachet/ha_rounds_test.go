//go:build !hafaults

package main

// haFaultRounds is how many kill and restart rounds each HA fault test runs:
// one in `make test`, more in `make ha-faults` (ha_rounds_long_test.go).
const haFaultRounds = 1
