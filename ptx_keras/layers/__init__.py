# filled by model issue
