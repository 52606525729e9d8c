from setuptools import find_packages, setup
setup(name="fna_d2", version="0.1.0", packages=find_packages(include=["fna_d2", "fna_d2.*"]))
