"""Information (monitoring) drivers: the probes OpenNebula's monitord receives from hosts."""
