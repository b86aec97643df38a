"""The checks registry-diagnose ships, registered through the `registry_diagnose.checks` entry
point group exactly as a third party's would be."""
