"""Lead lists saved by the browser extension: a JSON document in file storage, listed,
downloaded flattened, turned into processing sessions."""
