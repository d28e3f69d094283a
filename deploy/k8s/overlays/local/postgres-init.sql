-- First start of the local PostgreSQL only (docker-entrypoint-initdb.d):
-- the service roles of tenantq with throwaway development passwords.
-- tq_migrate owns the database and so the tq schema it creates; tq_worker
-- may create the tenants' roles; tq_cli submits and reads status. What each
-- may do inside schema tq is granted by the migrations themselves.
CREATE ROLE tq_migrate LOGIN PASSWORD 'local-migrate-pw';
CREATE ROLE tq_worker LOGIN CREATEROLE PASSWORD 'local-worker-pw';
CREATE ROLE tq_cli LOGIN PASSWORD 'local-cli-pw';
ALTER DATABASE tenantq OWNER TO tq_migrate;
GRANT CONNECT, CREATE ON DATABASE tenantq TO tq_worker;
GRANT CONNECT ON DATABASE tenantq TO tq_cli;
