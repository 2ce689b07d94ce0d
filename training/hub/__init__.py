"""The central hub: enrolment, anonymised drift reports in, signed model releases (TUF) out."""
