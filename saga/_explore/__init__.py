"""Internals of the failure explorer (:mod:`saga.explore`)."""
