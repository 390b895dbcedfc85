"""Tokens: the token store, a corpus tokenised once into memory-mapped shards (:mod:`.store`,
built by :mod:`.prepare`), cut into training blocks (:mod:`.dataset`) or streamed (:mod:`.stream`)."""
