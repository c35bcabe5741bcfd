//go:build hafaults

package main

// haFaultRounds for `make ha-faults`.
const haFaultRounds = 5
