// DeviceCatalog: being written.
