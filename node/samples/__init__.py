"""Bundled synthetic sample studies (no patient data): a chest CT phantom and a chest radiograph."""

from node.samples.studies import write_sample_studies
from node.samples.writers import SamplePatient, write_ct_series, write_projection

__all__ = ["SamplePatient", "write_ct_series", "write_projection", "write_sample_studies"]
