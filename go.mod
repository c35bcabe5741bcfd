module github.com/cachet-custody/cachet

go 1.26.8
