"""Fault injection: kill -9, full disks, corrupt inputs, dead or hung workers."""
