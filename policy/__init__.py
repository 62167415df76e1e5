"""kaito-aks's CrossGuard policy pack; the policies are in kaito_policies (importable, unlike __main__)."""
