# Make targets of the peer environments (filled in by the peers work).
