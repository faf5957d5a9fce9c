"""The fake outside world of the dfe_airbyte tests (Airbyte, Azure AD, Google
STS and IAM, BigQuery); run it with "python3 test/fake" (see __main__.py)."""
