"""dicom_rules: a safe, explainable routing-rule language for DICOM headers."""

__all__: list[str] = []
