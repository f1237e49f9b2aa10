"""The training app: LightningModule, DataModule, callbacks, loggers, launch, reports."""
