"""Curation: datatrove steps that turn raw web text into the documents we tokenize."""
