"""One module per seed resource group under ``/api/v1``: its request/response models and handlers."""
