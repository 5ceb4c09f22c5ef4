"""crdgen: clone a real cluster's nodes into Node CRs, and write the CRD manifests."""
