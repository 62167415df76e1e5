"""kaito-aks decisions: settings, catalogs, sizing, plan, manifests, endpoint check, CLI.

Everything in this package is plain Python that runs offline; `components/` turns its
decisions into Pulumi resources.
"""
