module ssebench/peer

go 1.19
